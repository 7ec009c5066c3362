"""Make one long `reciprocam eval` run in parts that can run one after another, in any session, or side by side.

    python benchmarks/eval_parts.py start PART_DIR --like CHECKPOINT --at START
    python benchmarks/eval_parts.py run PART_DIR --stop STOP -- EVAL_ARGS...
    python benchmarks/eval_parts.py merge FIRST.npz SECOND.npz OUT_DIR

A part is a report folder whose checkpoint (eval's OUTPUT/checkpoint.npz) covers
entries [start, stop) of the run. ``start`` makes a part that begins at entry
START, with the run key of CHECKPOINT (an earlier part of the same run) and
nothing counted yet. ``run`` runs `reciprocam eval EVAL_ARGS -o PART_DIR` (the
same arguments for every part) until entry STOP has been read and keeps the
part's final progress as PART_DIR/part.npz; an interrupted ``run`` continues
from the checkpoint, as eval does. ``merge`` adds the counts of two adjacent
parts (FIRST ends where SECOND starts) into OUT_DIR/checkpoint.npz; the eval
command with ``-o OUT_DIR`` then finds every entry done and writes the report
of the whole run (reciprocam_onnx/evaluation/parts.py says what it keeps).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reciprocam_onnx.errors import OptionError  # noqa: E402
from reciprocam_onnx.evaluation.checkpoint import CHECKPOINT  # noqa: E402
from reciprocam_onnx.evaluation.data import Dataset  # noqa: E402
from reciprocam_onnx.evaluation.parts import merge_parts, start_part  # noqa: E402
from reciprocam_onnx.evaluation.run import first_entry  # noqa: E402

PART = "part.npz"


def run(part: Path, stop: int, eval_args: list[str]) -> int:
    """eval, reading entries only up to ``stop``; its last checkpoint is kept as part.npz."""
    items, unlink = Dataset.items, Path.unlink

    def items_until_stop(self, first: int = 0, skipped: int = 0):
        if first >= stop:
            return
        for item in items(self, first, skipped):
            yield item
            if self.consumed >= stop:
                return

    def keep_part(self: Path, missing_ok: bool = False) -> None:
        if self.resolve() == (part / CHECKPOINT).resolve() and self.exists():
            shutil.copyfile(self, part / PART)
        unlink(self, missing_ok=missing_ok)

    Dataset.items, Path.unlink = items_until_stop, keep_part  # type: ignore[method-assign]
    from reciprocam_onnx.cli import main

    return main(["eval", *eval_args, "-o", str(part)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start")
    p.add_argument("part", type=Path)
    p.add_argument("--like", type=Path, required=True)
    p.add_argument("--at", type=int, required=True)
    p = sub.add_parser("run")
    p.add_argument("part", type=Path)
    p.add_argument("--stop", type=int, required=True)
    p = sub.add_parser("merge")
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("out", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, eval_args = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    try:
        if args.command == "start":
            args.part.mkdir(parents=True, exist_ok=True)
            start_part(args.like, args.at, args.part / CHECKPOINT)
        elif args.command == "run":
            return run(args.part, args.stop, eval_args)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            merged = merge_parts(args.first, args.second, args.out / CHECKPOINT)
            entries = f"{first_entry(merged)}-{merged['consumed']}"
            print(f"{args.out / CHECKPOINT}: entries {entries} ({merged['n']} images)")
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
of the whole run. Metrics are sums over images, so the merged report is the
uninterrupted run's, but for the time per image (the parts' compute time added
up) and the example pictures (FIRST's: the first images of the run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reciprocam_onnx.evaluation.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint  # noqa: E402
from reciprocam_onnx.evaluation.data import Dataset  # noqa: E402

PART = "part.npz"


def saved(path: Path) -> tuple[dict, dict, list[dict]]:
    """(key, state, examples) of a checkpoint file."""
    with np.load(path) as data:
        key = json.loads(str(data["meta"]))["key"]
    state, examples = load_checkpoint(path, key)
    return key, state, examples


def start(part: Path, like: Path, at: int) -> None:
    key, state, _ = saved(like)
    tallies = {name: {"seconds": 0.0, "sums": {}, "counts": {}, "class_hits": {}} for name in state["tallies"]}
    empty = {"n": 0, "labelled": 0, "correct": 0, "tallies": tallies, "consumed": at, "skipped": 0}
    save_checkpoint(part / CHECKPOINT, key, empty, [])


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


def merge(first: Path, second: Path, out: Path) -> None:
    key, a, examples = saved(first)
    key_b, b, _ = saved(second)
    if key_b != key:
        raise SystemExit(f"{first} and {second} are parts of different runs")
    if a["consumed"] != b["consumed"] - b["n"] - b["skipped"]:
        raise SystemExit(f"{first} ends at entry {a['consumed']}, where {second} does not start")
    merged = {name: a[name] + b[name] for name in ("n", "labelled", "correct", "skipped")}
    merged["consumed"] = b["consumed"]
    merged["tallies"] = {}
    for name, ta in a["tallies"].items():
        tb = b["tallies"][name]
        merged["tallies"][name] = {
            "seconds": ta["seconds"] + tb["seconds"],
            **{f: {k: ta[f].get(k, 0) + tb[f].get(k, 0) for k in {*ta[f], *tb[f]}} for f in ("sums", "counts")},
            "class_hits": {
                c: ta["class_hits"].get(c, []) + tb["class_hits"].get(c, [])
                for c in sorted({*ta["class_hits"], *tb["class_hits"]}, key=int)
            },
        }
    save_checkpoint(out / CHECKPOINT, key, merged, examples)
    print(f"{out / CHECKPOINT}: entries 0-{merged['consumed']} ({merged['n']} images)")


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
    if args.command == "start":
        args.part.mkdir(parents=True, exist_ok=True)
        start(args.part, args.like, args.at)
    elif args.command == "run":
        return run(args.part, args.stop, eval_args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        merge(args.first, args.second, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

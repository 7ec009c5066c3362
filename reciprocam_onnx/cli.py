"""The ``reciprocam`` command line: thin wrappers over the library.

Every command prints one clear line on a ReciproCamError and exits 1
(``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import ReciproCamError

log = logging.getLogger("reciprocam_onnx")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reciprocam`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except ReciproCamError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = argparse.ArgumentParser(prog="reciprocam", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())

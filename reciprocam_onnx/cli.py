"""The ``reciprocam`` command line: thin wrappers over the library.

A user error (``UserError``) is one clear line and exit code 1; anything else is
a bug in reciprocam-onnx, reported as one line that says so, exit code 70.
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from .errors import UserError

BUG_EXIT = 70  # EX_SOFTWARE

log = logging.getLogger("reciprocam_onnx")


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler stopping the job): unwinds like Ctrl-C."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reciprocam`` console script. Ctrl-C at any point, imports included, is one
    line ("interrupted", exit code 130), SIGTERM likewise ("terminated", 143); files written before
    either are whole."""
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    code = 1
    try:
        code = _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Terminated:
        print("terminated", file=sys.stderr)
        code = 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        files = sys.modules.get("reciprocam_onnx.io.files")
        if code != 0 and files is not None:
            files.remove_empty_created()  # an output folder made for a run that wrote nothing
    return code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 1, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message} (see {self.prog} --help)\n")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)  # imports the verbs, and with them ONNX and NumPy
    except SystemExit as done:  # --help (0), or a usage error already printed in one line (1)
        return done.code if isinstance(done.code, int) else 1
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        from .io.limits import check_limits

        check_limits()  # a bad RECIPROCAM_* variable: one line, before any work
        return args.run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so in one line, traceback with --debug
        if args.debug:
            raise
        where = _origin(exc)
        print(
            f"internal error (a bug in reciprocam-onnx): {type(exc).__name__}: {exc} [{where}]; "
            "please report it with the output of the same command run with --debug",
            file=sys.stderr,
        )
        return BUG_EXIT


def _origin(exc: BaseException) -> str:
    """file:line of the innermost frame of the traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "unknown place" if tb is None else f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def _parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = _Parser(prog="reciprocam", description="ViT-ReciproCAM saliency maps for ONNX ViTs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())

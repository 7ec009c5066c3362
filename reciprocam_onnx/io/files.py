"""Outputs: locations checked before any work, files written atomically, and in complete sets.

A reader never sees a half-written file, and a set of files (a map and its
overlay, a split folder) is written all or nothing. A writer killed outright
(SIGKILL, power loss) leaves hidden temporaries that name its process; the
next write of the same file removes them. Failures are
``OutputError``s: one line naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ..errors import OutputError

STOPPING = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}  # no later write can succeed


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder that exists and takes new files (created if needed), else OutputError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is an existing file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".reciprocam-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into {path}: {exc.strerror or exc}", exc.errno in STOPPING) from None
    return path


def output_file(path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written (its folder exists or is created), else OutputError."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is an existing folder; give a file name")
    output_folder(path.parent)
    return path


def write_all_atomic(writers: Mapping[Path, Callable[[Path], object]]) -> list[Path]:
    """Write every file of ``writers`` (path -> write(tmp)) to temporaries, then rename them all into
    place: all of them or, when any write fails, none (OutputError)."""
    temporaries: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            final = Path(target)
            _remove_orphans(final)
            fd, name = tempfile.mkstemp(prefix=_temporary_prefix(final), suffix=final.suffix, dir=final.parent)
            os.close(fd)
            temporaries.append((Path(name), final))
            write(Path(name))
            os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with _signals_held():  # Ctrl-C or SIGTERM lands after the renames, not between them
            for temporary, final in temporaries:
                os.replace(temporary, final)
    except OSError as exc:
        where = temporaries[-1][1] if temporaries else Path(next(iter(writers), ""))
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}", exc.errno in STOPPING) from exc
    finally:
        for temporary, _ in temporaries:
            temporary.unlink(missing_ok=True)
    return [Path(p) for p in writers]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (where the platform can), then let them in."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _temporary_prefix(final: Path) -> str:
    """Temporaries of ``final`` are hidden and name the process writing them: '.map.npy.4242.x1y2.npy'."""
    return f".{final.name}.{os.getpid()}."


def _remove_orphans(final: Path) -> None:
    """Remove temporaries of ``final`` left by a writer that was killed (its process is gone)."""
    for leftover in final.parent.glob(f".{glob.escape(final.name)}.*{glob.escape(final.suffix)}"):
        pid = leftover.name[len(final.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours
        return True
    return True


def bytes_writer(data: bytes) -> Callable[[Path], object]:
    """A writer of ``data``, for write_all_atomic."""
    return lambda tmp: tmp.write_bytes(data)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (its folder created if needed) atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}", exc.errno in STOPPING) from exc
    write_all_atomic({path: bytes_writer(data)})
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

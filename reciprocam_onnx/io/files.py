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

import numpy as np

from ..errors import OutputError

STOPPING = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}  # no later write can succeed


CREATED: list[Path] = []  # folders this process created for outputs, removed again if a failed run left them empty


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder that exists and takes new files (created if needed), else OutputError."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(f"output folder {path} is an existing file; give a folder")
        missing = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
        path.mkdir(parents=True, exist_ok=True)
        if missing is not None:
            CREATED.append(missing)
        fd, probe = tempfile.mkstemp(prefix=".reciprocam-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into {path}: {exc.strerror or exc}", exc.errno in STOPPING) from None
    return path


def output_file(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """``path`` as a file that can be written (its folder exists or is created), not one of ``inputs``,
    else OutputError. A symbolic link is written through (the file it names is replaced)."""
    if str(path).endswith(("/", os.sep)):
        raise OutputError(f"output {path} names a folder; give a file name")
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputError(f"output {path} is an existing folder; give a file name")
        if path.exists() and not path.resolve().is_file():
            raise OutputError(f"output {path} exists and is not a regular file (a device or pipe?); give a file name")
        if any(Path(given).exists() and path.exists() and path.samefile(given) for given in inputs):
            raise OutputError(f"output {path} is the input itself; give another file name")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", exc.errno in STOPPING) from None
    output_folder(path.parent)
    return path.resolve() if path.is_symlink() else path


def remove_empty_created() -> None:
    """Remove the output folders this process created and left empty (a run that failed early)."""
    while CREATED:
        folder = CREATED.pop()
        for empty in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                empty.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()


def write_all_atomic(writers: Mapping[Path, Callable[[Path], object]]) -> list[Path]:
    """Write every file of ``writers`` (path -> write(tmp)) to temporaries, then rename them all into
    place: all of them or, when any write fails, none (OutputError naming the file)."""
    temporaries: list[tuple[Path, Path]] = []
    current = Path(next(iter(writers), ""))
    try:
        for target in writers:
            current = Path(target)
            if current.is_dir() or (current.exists() and not current.resolve().is_file()):
                raise OutputError(f"cannot write {current}: a folder or other non-file is in its place")
        for target, write in writers.items():
            current = final = Path(target).resolve() if Path(target).is_symlink() else Path(target)
            _remove_orphans(final)
            fd, name = tempfile.mkstemp(prefix=_temporary_prefix(final), suffix=final.suffix, dir=final.parent)
            os.close(fd)
            temporaries.append((Path(name), final))
            write(Path(name))
            os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with _signals_held():  # Ctrl-C or SIGTERM lands after the renames, not between them
            for temporary, final in temporaries:
                current = final
                os.replace(temporary, final)
    except OSError as exc:
        raise OutputError(f"cannot write {current}: {exc.strerror or exc}", exc.errno in STOPPING) from exc
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


def npy_writer(array: np.ndarray) -> Callable[[Path], object]:
    """A writer of ``array`` as a .npy file, for write_all_atomic."""
    return lambda tmp: np.save(tmp, array)


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

"""Verified splits kept between runs, so that opening a model a second time skips its analysis, cut,
rewrites and verification (together a few explanations' time for a ViT-S/16).

An entry is a split folder (contract.save_split, or save_shared for several blocks) in the user's cache
folder: $RECIPROCAM_CACHE, else $XDG_CACHE_HOME/reciprocam-onnx, else ~/.cache/reciprocam-onnx
(RECIPROCAM_CACHE=off turns the cache off). Its name is the SHA-256 of the model file's bytes (and of its
external data files' names, sizes and times), of the options that change the cut and of this package's
source code. An entry is renamed into place complete, is checked against its checksums when read (a torn
or edited one is made again), and the least recently used entries go once the cache holds more than
$RECIPROCAM_CACHE_BYTES (default 4 GiB).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import onnx

from ..errors import ModelLoadError, OutputError
from ..graph.model import ModelSource

log = logging.getLogger(__name__)

CACHE_ENV, LIMIT_ENV = "RECIPROCAM_CACHE", "RECIPROCAM_CACHE_BYTES"
DEFAULT_LIMIT_BYTES = 4 << 30
STAGING_DAYS = 1  # a staging folder older than this was left by a run that was killed
_READ_BYTES = 1 << 22
_EXTERNAL_MARK = b"\x0a\x08location"  # a tensor's external_data entry "location", as protobuf writes it

T = TypeVar("T")


def cache_root() -> Path | None:
    """The cache folder (None: turned off)."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return None if given.strip().lower() in ("off", "0", "") else Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reciprocam-onnx"


def cached(source: ModelSource, cut: dict, make: Callable[[], T], save: Callable, load: Callable[[Path], T]) -> T:
    """``load`` of the entry for ``source`` cut as ``cut`` says (JSON-ready), else ``make()``, saved (``save(value,
    folder)``) for next time. Models given as a ModelProto, and a cache folder that cannot be written, are
    not cached (one warning line for the latter)."""
    root = cache_root()
    if root is None or isinstance(source, onnx.ModelProto) or not Path(source).is_file():
        return make()
    folder = root / _key(Path(source), cut)
    if folder.is_dir():
        try:
            value = load(folder)
            os.utime(folder)  # recently used
            log.info("split read from the cache: %s", folder)
            return value
        except ModelLoadError as exc:
            log.warning("a cached split was unreadable and is made again (%s)", exc)
            shutil.rmtree(folder, ignore_errors=True)
    value = make()
    _store(root, folder, value, save)
    return value


def _store(root: Path, folder: Path, value: object, save: Callable) -> None:
    """Write ``value`` as ``folder``: into a folder of its own, renamed into place (another process that got
    there first wins); then trim the cache to its size limit."""
    staging = root / f".{folder.name}.{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        save(value, staging)
        try:
            staging.rename(folder)
        except OSError:  # written meanwhile by another run
            shutil.rmtree(staging, ignore_errors=True)
        _trim(root, keep=folder)
    except (OSError, OutputError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("cannot keep the split in the cache folder %s (%s); set %s=off", root, exc, CACHE_ENV)


def _trim(root: Path, keep: Path) -> None:
    """Remove the least recently used entries until the cache holds at most its limit (never ``keep``)."""
    try:
        limit = int(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT_BYTES))
    except ValueError:
        log.warning("%s must be a number of bytes; keeping the default %d", LIMIT_ENV, DEFAULT_LIMIT_BYTES)
        limit = DEFAULT_LIMIT_BYTES
    used, sizes = {}, {}
    for entry in root.iterdir():
        try:
            used[entry] = entry.stat().st_mtime
            sizes[entry] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        except OSError:  # removed meanwhile by another run
            used.pop(entry, None)
    stale = time.time() - STAGING_DAYS * 86400
    for entry in [e for e in used if e.name.startswith(".")]:  # a staging folder of a run that was killed
        if used.pop(entry) < stale:
            shutil.rmtree(entry, ignore_errors=True)
    total = sum(sizes[entry] for entry in used)
    for entry in sorted(used, key=used.__getitem__):
        if total <= limit:
            break
        if entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]


def _key(path: Path, cut: dict) -> str:
    """The entry name: SHA-256 of the model's bytes, its external data files, ``cut`` and this code."""
    digest, tail, external = hashlib.sha256(), b"", False
    with path.open("rb") as file:
        while block := file.read(_READ_BYTES):
            digest.update(block)
            external = external or _EXTERNAL_MARK in tail + block
            tail = block[-len(_EXTERNAL_MARK) :]
    for data in sorted(_external_files(path) if external else ()):
        stat = data.stat()
        digest.update(f"{data.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(json.dumps({"cut": cut, "code": _code_digest()}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


@functools.cache
def _code_digest() -> str:
    """SHA-256 of this package's source: a split made by other code (another version, or a checkout edited
    since) is another entry."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _external_files(path: Path) -> set[Path]:
    """The external data files the model names (beside it)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - load_model says what is wrong when the model is made
        return set()
    found = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and (path.parent / entry.value).is_file():
                found.add(path.parent / entry.value)
    return found

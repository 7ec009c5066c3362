"""Explain an image collection as a Ray Data job, on one machine or a cluster.

    paths (a folder tree, or a list file of paths/URIs), less those already in OUT/results
      ──ray.data.from_items──► map_batches(ExplainWorker, an actor pool of ``workers``)
      ──iter_batches──► the driver writes each batch as OUT/results/part-RUN-K.parquet (and overlays)

Each worker holds one explainer (open_explainer: a model, split folder or fused graph). A row per
image: path, ok, error, target, target_name, top_classes, top_scores, map (row-major float32, with
map_height and map_width) and overlay (a file under OUT/overlays, or ""). A part and its overlays are
written as a set, atomically, so a killed job leaves only whole parts and a rerun skips their images.
An image that cannot be read or explained is a row with ok=False and the reason; it never stops the
job. Ray is an optional dependency (``pip install "reciprocam-onnx[ray]"``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError, ReciproCamError
from .graph.runtime import CPU, CUDA
from .io.files import bytes_writer, output_folder, write_all_atomic
from .io.images import IMAGE_SUFFIXES, RESIZE_MODES, check_resize, decode_image, load_image
from .io.progress import progress

log = logging.getLogger(__name__)

RESULTS, OVERLAYS = "results", "overlays"


@dataclass(frozen=True)
class DatasetJob:
    """What every worker needs: the model and how to explain and report each image."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    resize: str = RESIZE_MODES[0]
    top: int = 5
    overlays: bool = False
    use_gpu: bool = False


def explain_dataset(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model: str | os.PathLike,
    options: dict[str, Any] | None = None,
    *,
    ray_address: str | None = None,
    workers: int = 2,
    cpus_per_worker: int = 1,
    use_gpu: bool = False,
    batch_size: int = 16,
    overlays: bool = False,
    top: int = 5,
    resize: str = RESIZE_MODES[0],
    show_progress: bool = True,
) -> dict[str, int]:
    """Explain every image of ``source`` not yet in ``output``; returns counts: images, skipped (done
    before), explained, failed (this run)."""
    from .engine.fused_explainer import open_explainer

    if workers < 1 or cpus_per_worker < 1 or batch_size < 1 or top < 1:
        raise OptionError("workers, cpus per worker, batch size and top must be at least 1")
    check_resize(resize)
    _require_ray()
    results = output_folder(Path(output) / RESULTS)
    paths = list_inputs(source, skip=Path(output))
    done = done_paths(results)
    todo = [path for path in paths if path not in done]
    job = DatasetJob(str(model), dict(options or {}), resize, top, overlays, use_gpu)
    open_explainer(job.model, providers=_providers(use_gpu), **job.options)  # a bad model or option: one line, now
    counts = {"images": len(paths), "skipped": len(paths) - len(todo), "explained": 0, "failed": 0}
    if not todo:
        return counts
    ray, started = _ray(ray_address)
    try:
        if use_gpu and ray.cluster_resources().get("GPU", 0) < 1:
            raise OptionError("--gpu: this Ray cluster has no GPUs (its nodes declare none); run without --gpu")
        worker = type("ExplainWorker", (ExplainWorker,), {"job": job})  # the job travels with the class
        dataset = ray.data.from_items([{"path": path} for path in todo]).map_batches(
            worker,
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=1 if use_gpu else 0,
            runtime_env={"env_vars": {"RECIPROCAM_THREADS": str(cpus_per_worker)}},
        )
        run = uuid.uuid4().hex[:8]
        batches = dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow")
        total = -(-len(todo) // batch_size)
        for k, table in enumerate(progress(batches, total if show_progress else 0, "explaining")):
            ok = _write_part(Path(output), f"part-{run}-{k:05d}.parquet", table)
            counts["explained"] += ok
            counts["failed"] += table.num_rows - ok
    finally:
        if started:
            ray.shutdown()
    return counts


def list_inputs(source: str | os.PathLike, skip: Path | None = None) -> list[str]:
    """Image paths: every image under a folder (recursively, sorted; none under ``skip``, the job's own
    output), or the lines of a list file (paths or URIs that pyarrow opens, e.g. s3://...; blank lines
    and # comments skipped)."""
    source = Path(source)
    if source.is_dir():
        mine = skip.resolve() if skip is not None else None
        return sorted(
            str(p)
            for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and (mine is None or mine not in p.resolve().parents)
        )
    if source.is_file():
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError(f"cannot read the list file {source}: {exc}") from None
        return list(dict.fromkeys(s for line in lines if (s := line.strip()) and not s.startswith("#")))
    raise OptionError(f"{source} is neither a folder of images nor a list file of image paths")


def done_paths(results: Path) -> set[str]:
    """The paths already in the results' parts (explained or recorded as failed)."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(results.glob("part-*.parquet")):
        try:
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        except Exception as exc:  # pyarrow raises its own types for a file that is not Parquet
            message = f"{part} is not a readable results part ({exc}); move it away to redo its images"
            raise OptionError(message) from None
    return done


class ExplainWorker:
    """A Ray actor: one explainer, a table of results per batch of paths. ``job`` is set on a subclass
    made per job (explain_dataset)."""

    job: DatasetJob

    def __init__(self) -> None:
        from .engine.fused_explainer import open_explainer

        self.explainer = open_explainer(self.job.model, providers=_providers(self.job.use_gpu), **self.job.options)

    def __call__(self, batch):
        import pyarrow as pa

        rows = [self.explain(path) for path in batch.column("path").to_pylist()]
        return pa.Table.from_pylist(rows, schema=_schema())

    def explain(self, path: str) -> dict[str, Any]:
        """One result row; failures are rows too."""
        row: dict[str, Any] = {"path": path, "ok": False, "error": "", "target": -1, "target_name": ""}
        try:
            info = self.explainer.info
            x, fitted = info.preprocess(_read_image(path), self.job.resize)
            out = self.explainer.explain(x[None])
            scores, target, saliency = out.scores[0], int(out.targets[0]), out.maps[0]
            order = np.argsort(-scores)[: self.job.top]
            row.update(
                ok=True,
                target=target,
                target_name=info.model.label(target),
                top_classes=order.tolist(),
                top_scores=scores[order].astype(float).tolist(),
                map=saliency.reshape(-1).tolist(),
                map_height=saliency.shape[0],
                map_width=saliency.shape[1],
                overlay_png=_overlay_png(fitted, saliency) if self.job.overlays else None,
            )
        except ReciproCamError as exc:
            row["error"] = str(exc)
        except Exception as exc:  # a bug, or a storage error: recorded, never the end of the job
            row["error"] = f"{type(exc).__name__}: {exc}"
        return row


def _write_part(output: Path, name: str, table) -> int:
    """Write a part (and its overlays) all or nothing; returns how many of its rows are explained."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pictures = table.column("overlay_png").to_pylist()
    paths = table.column("path").to_pylist()
    files = {}
    overlay_names = [""] * len(paths)
    for k, (path, picture) in enumerate(zip(paths, pictures)):
        if picture is not None:
            target = output / OVERLAYS / f"{hashlib.sha1(path.encode()).hexdigest()[:10]}-{Path(path).stem}.overlay.png"
            output_folder(target.parent)
            files[target] = bytes_writer(picture)
            overlay_names[k] = str(target.relative_to(output))
    stored = table.drop_columns(["overlay_png"]).append_column("overlay", pa.array(overlay_names, pa.string()))
    files[output / RESULTS / name] = lambda tmp: pq.write_table(stored, tmp)
    write_all_atomic(files)  # the part last: it records the overlays before it
    return sum(table.column("ok").to_pylist())


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("ok", pa.bool_()),
            ("error", pa.string()),
            ("target", pa.int64()),
            ("target_name", pa.string()),
            ("top_classes", pa.list_(pa.int64())),
            ("top_scores", pa.list_(pa.float64())),
            ("map", pa.list_(pa.float32())),
            ("map_height", pa.int64()),
            ("map_width", pa.int64()),
            ("overlay_png", pa.binary()),
        ]
    )


def _read_image(path: str) -> np.ndarray:
    """RGB uint8 from a local file (load_image: its size is checked before reading), or from a URI
    pyarrow's filesystems open (s3://, gs://, hdfs://, ...)."""
    if "://" not in path:
        return load_image(path)
    import pyarrow.fs

    filesystem, inside = pyarrow.fs.FileSystem.from_uri(path)
    with filesystem.open_input_file(inside) as handle:
        return decode_image(handle.read(), path)


def _overlay_png(fitted: np.ndarray, saliency: np.ndarray) -> bytes:
    from .io.overlay import overlay, png_bytes

    return png_bytes(overlay(fitted, saliency))


def _providers(use_gpu: bool) -> Sequence[str]:
    return [CUDA, CPU] if use_gpu else [CPU]


def _require_ray():
    """The ray module, with Ray Data's pyarrow; OptionError saying how to install them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise OptionError('explaining a dataset needs Ray Data: pip install "reciprocam-onnx[ray]"') from None
    return ray


def _ray(address: str | None):
    """(the ray module, whether this call started it): joins ``address``, else starts a local Ray."""
    ray = _require_ray()
    if ray.is_initialized():
        _quiet(ray)
        return ray, False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    _quiet(ray)
    return ray, True


def _quiet(ray) -> None:
    """Ray Data's own progress bars and INFO lines off: the job draws one progress bar."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:  # its console; its log files keep everything
        if "File" not in type(handler).__name__:
            handler.setLevel(logging.ERROR)

"""ONNX Runtime sessions: provider choice with a quiet CPU fallback, tuned options."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import io
import logging
import os
import tempfile
from collections.abc import Sequence

import onnx

from ..errors import OnnxRuntimeError, OptionError, onnxruntime_errors
from ..io.limits import limit

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def physical_cores() -> int:
    """Cores this process may use (hyper-threads share a core's FMA units; we take what we get)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def threads() -> int:
    """Intra-op threads for ONNX Runtime and OpenVINO: RECIPROCAM_THREADS (a worker that shares the machine),
    at most the usable cores, or the usable cores. More threads than cores only contend (100,000 of them
    held 16 GB and stalled a run): a larger value is capped, with one warning line."""
    cores, asked = physical_cores(), limit("RECIPROCAM_THREADS")
    if asked > cores:
        _warn_once(f"RECIPROCAM_THREADS={asked} is more than the {cores} usable cores: running {cores} threads")
        return cores
    return asked or cores


@functools.cache
def _warn_once(message: str) -> None:
    log.warning("%s", message)


def session_options():
    """Full graph optimisation, intra-op threads (``threads``), memory arena on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads()
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3
    return options


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True if a CUDA session really starts here (the provider list alone is not proof)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
        ir_version=8,
    )
    ort.set_default_logger_severity(4)
    try:
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip packages (nvidia-*), if present
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ort.preload_dlls()  # it prints each library it cannot find
        session = ort.InferenceSession(probe.SerializeToString(), providers=[CUDA, CPU])
        return CUDA in session.get_providers()
    except Exception:  # any failure to start CUDA means: use the CPU
        return False
    finally:
        ort.set_default_logger_severity(2)


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """The providers to ask for: as given, else CUDA (if it really works) then CPU."""
    if providers is not None:
        if isinstance(providers, str) or not all(isinstance(p, str) for p in providers):
            raise OptionError(f"providers must be a list of provider names, not {providers!r}")
        return list(providers)
    return [CUDA, CPU] if cuda_usable() else [CPU]


def make_session(model: onnx.ModelProto | str | os.PathLike, providers: Sequence[str] | None = None):
    """An InferenceSession for ``model`` (a ModelProto or a file, the leaner) on the resolved providers."""

    wanted = resolve_providers(providers)
    if CUDA in wanted and not cuda_usable():
        log.info("CUDA is not usable here; running on CPU")
        wanted = [p for p in wanted if p != CUDA] or [CPU]
    # exact float32 on CUDA: TensorFloat-32 moved the demo model's maps by up to 0.07 (0.0004 without)
    requested: list[str | tuple[str, dict[str, str]]] = [(CUDA, {"use_tf32": "0"}) if p == CUDA else p for p in wanted]
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = _create(source, session_options(), requested)
    log.debug("session providers: %s", session.get_providers())
    return session


def lean_session(model: onnx.ModelProto | str | os.PathLike):
    """A CPU session for one-off checks: no arena, no weight prepacking, no graph rewrites."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    if not isinstance(model, onnx.ModelProto):
        return _create(str(model), options, [CPU])
    with tempfile.TemporaryDirectory(prefix="reciprocam-") as folder:  # a file costs ORT less than bytes
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as file:
            file.write(model.SerializeToString())
        return _create(path, options, [CPU])


def _create(source: bytes | str, options, providers: Sequence):
    """An InferenceSession; ORT's own failure report (printed, then retried on CPU) is kept off stdout,
    and any failure, a name that is not UTF-8 included, is one OnnxRuntimeError."""
    import onnxruntime as ort

    with onnxruntime_errors("loading a graph"), contextlib.redirect_stdout(io.StringIO()):
        try:
            return ort.InferenceSession(source, options, providers=providers)
        except UnicodeError as exc:
            raise OnnxRuntimeError(
                f"ONNX Runtime failed while loading a graph: a name in it is not text ({exc})"
            ) from None


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so peaks do not stack."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def on_cuda(session) -> bool:
    """True if the session actually runs on CUDA."""
    return CUDA in session.get_providers()

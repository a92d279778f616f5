"""onnxruntime vs PyTorch: sessions on the providers actually used, output checks, latency, the folding proof.

``provider="cuda"`` fails unless CUDA is really in use (onnxruntime-gpu silently falls back to the CPU).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pwmpr.errors import PwmprError

PROVIDERS = ("auto", "cpu", "cuda")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
RTOL = 1e-5  # max |onnxruntime - PyTorch| <= RTOL * max(1, max |PyTorch|) in fp32
SENSITIVITY_TRIALS = 3  # float64 forwards with float32-rounding-sized perturbations (see float32_sensitivity)
SENSITIVITY_FACTOR = 2.0  # onnxruntime and PyTorch each round: allow twice the model's own spread


def requested_providers(provider: str) -> list[str]:
    """The onnxruntime provider list for ``--provider auto|cpu|cuda`` (``cuda`` without a CUDA build is an error)."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise PwmprError(f"--provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    available = ort.get_available_providers()
    if provider == "cpu":
        return [CPU_EP]
    if CUDA_EP not in available:
        if provider == "cuda":
            raise PwmprError("--provider cuda: this onnxruntime has no CUDA provider (install pwmpr[gpu], i.e. "
                             "onnxruntime-gpu, instead of onnxruntime); use --provider cpu or auto")
        return [CPU_EP]
    return [CUDA_EP, CPU_EP]


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises from C++ (they derive from Exception, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return (RuntimeError, *(getattr(state, n) for n in names if hasattr(state, n)))


_preloaded = False


def _preload_cuda(ort) -> None:
    """``onnxruntime.preload_dlls()`` (1.21+) once: CUDA/cuDNN from torch's or the nvidia-* wheels' libraries."""
    global _preloaded
    if not _preloaded and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    _preloaded = True


@dataclass
class Session:
    """An onnxruntime session with what it really runs on and how long it took to start."""

    session: object
    providers: list[str]
    start_s: float

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a float32 batch ``x``."""
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: x})[0]


def open_session(model_bytes: bytes, providers: list[str], *, threads: int | None = None,
                 optimized_path: str | None = None, level: str = "all") -> Session:
    """Create an onnxruntime session from serialized ONNX; PwmprError if onnxruntime refuses it.

    ``threads`` defaults to torch's; ``level`` is ``basic`` (constant folding) or ``all``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.log_severity_level = 3  # CUDA fallback and NCHWc notices are read back from get_providers() instead
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "basic"
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    provider_args: list = []
    for p in providers:
        # TF32 would break the 1e-5 agreement with fp32 PyTorch; ask the CUDA provider for full fp32.
        provider_args.append((p, {"use_tf32": "0"}) if p == CUDA_EP else p)
    if CUDA_EP in providers:
        _preload_cuda(ort)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # "Specified provider ... is not in available provider names": the fallback is read back below.
            warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
            sess = ort.InferenceSession(model_bytes, sess_options=opts, providers=provider_args)
    except ort_errors() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PwmprError(f"onnxruntime cannot load the model: {first}") from None
    return Session(sess, list(sess.get_providers()), time.perf_counter() - start)


def check_provider(provider: str, used: list[str]) -> None:
    """``--provider cuda`` must have run on CUDA; onnxruntime-gpu would have fallen back to CPU silently."""
    if provider == "cuda" and (not used or used[0] != CUDA_EP):
        raise PwmprError(f"--provider cuda: onnxruntime did not use CUDA (it used {', '.join(used) or 'nothing'}); "
                         "check the CUDA/cuDNN libraries or use --provider cpu")


@dataclass
class Agreement:
    """How closely two output batches agree."""

    max_diff: float
    tolerance: float
    n: int
    n_top1_checked: int
    n_top1_mismatch: int

    @property
    def ok(self) -> bool:
        """Within tolerance and the same top-1 wherever the top-2 margin exceeds the tolerance."""
        return bool(np.isfinite(self.max_diff)) and self.max_diff <= self.tolerance and self.n_top1_mismatch == 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"max_diff": self.max_diff, "tolerance": self.tolerance, "n_inputs": self.n,
                "top1_checked": self.n_top1_checked, "top1_mismatch": self.n_top1_mismatch, "ok": self.ok}


def measure_agreement(reference: np.ndarray, got: np.ndarray, floor: float = 0.0) -> Agreement:
    """Compare outputs (N, classes) or (N, seq, classes) with the PyTorch reference, top-1 per sample or position.

    The tolerance is ``RTOL * max(1, max|ref|)``, or ``floor`` where that is larger.
    """
    reference = np.asarray(reference, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    tol = max(floor, RTOL * max(1.0, float(np.abs(reference).max()) if reference.size else 1.0))
    if got.shape != reference.shape:
        return Agreement(float("inf"), tol, len(reference), 0, len(reference))
    diff = float(np.abs(got - reference).max()) if reference.size else 0.0
    rows = -1 if reference.ndim == 3 else len(reference)  # per position: the classes are the last dim
    ref2 = reference.reshape(rows, reference.shape[-1] if rows == -1 else -1)
    got2 = got.reshape(ref2.shape)
    if ref2.shape[1] < 2:
        return Agreement(diff, tol, len(reference), 0, 0)
    top2 = np.sort(ref2, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > tol
    mismatch = clear & (ref2.argmax(axis=1) != got2.argmax(axis=1))
    return Agreement(diff, tol, len(reference), int(clear.sum()), int(mismatch.sum()))


def float32_sensitivity(model: torch.nn.Module, x: np.ndarray, trials: int = SENSITIVITY_TRIALS,
                        seed: int = 0) -> float:
    """How far float32 rounding alone can move this model's outputs, times ``SENSITIVITY_FACTOR``.

    Runs a float64 copy with every weight, buffer and input perturbed by one float32 rounding, ``trials`` times.
    """
    import copy

    model64 = copy.deepcopy(model).to(torch.float64).eval()
    inputs = torch.from_numpy(np.asarray(x))
    inputs = inputs.to(torch.float64) if inputs.is_floating_point() else inputs
    gen = torch.Generator().manual_seed(seed)
    eps = 2.0 ** -24

    def jitter(t: torch.Tensor) -> torch.Tensor:
        return t * (1 + eps * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float64) - 1))

    with torch.inference_mode():
        exact = model64(inputs)
        tensors = [t for t in [*model64.parameters(), *model64.buffers()] if t.is_floating_point()]
        originals = [t.clone() for t in tensors]
        spread = 0.0
        for _ in range(trials):
            for t, orig in zip(tensors, originals, strict=True):
                t.copy_(jitter(orig))
            moved = model64(jitter(inputs) if inputs.is_floating_point() else inputs)
            spread = max(spread, float((moved - exact).abs().max()))
    return SENSITIVITY_FACTOR * spread


def latency_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` calls, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def folded_op_counts(model_bytes: bytes, providers: list[str]) -> dict[str, int]:
    """Operator counts of the graph onnxruntime runs after basic optimisation (constant folding)."""
    import onnx

    from pwmpr.export.onnx_graph import op_counts

    with tempfile.TemporaryDirectory(prefix="pwmpr-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        open_session(model_bytes, providers, optimized_path=path, level="basic")
        return op_counts(onnx.load(path, load_external_data=False))

"""``export_run``: a run folder -> validated safetensors + ONNX files and ``export_report.json``.

Files are written to a temporary folder and moved into place only once every check passed (safetensors reload,
each ONNX encoding checked, run in onnxruntime and matched to PyTorch); a failure leaves nothing behind.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import pwmpr
from pwmpr import rundir
from pwmpr.errors import PwmprError
from pwmpr.export import onnx_graph, packing, validate
from pwmpr.export.safetensors_io import (
    MASKS_FILE,
    MODEL_FILE,
    Artifact,
    export_metadata,
    load_export,
    read_run_artifact,
    write_export_files,
)
from pwmpr.lock import lock_beside, lock_run_dir_for_reading
from pwmpr.probe import class_scores, input_dtype_of

ONNX_FILE = "model.onnx"
REPORT_FILE = "export_report.json"
N_INPUTS = 64
TIMING_BATCHES = (1, 64)


def encoding_file(encoding: str) -> str:
    """File name of one encoding kept by ``--all-encodings``: ``model.<encoding>.onnx``."""
    return f"model.{encoding}.onnx"


def validation_inputs(art: Artifact, n: int = N_INPUTS, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` inputs from the run's data (test, validation, then training split), else seeded random ones.

    Returns ``(float32 array (n, *input_shape), or int64 for token ids; a note saying where they came from)``.
    """
    from pwmpr.data import load_data

    data, cfg = art.config.get("data"), art.config
    parts: list[torch.Tensor] = []
    notes: list[str] = []
    try:
        if not data:
            raise PwmprError("the run records no data set")
        bundle = load_data(data, cfg.get("data_dir"), val_fraction=cfg.get("val_fraction", 0.1),
                           context=cfg.get("context"))
        for split in ("test", "val", "train"):
            have = sum(len(p) for p in parts)
            if have >= n:
                break
            sample = bundle.sample_inputs(n - have, split)
            sample = sample.float() if sample.is_floating_point() else sample.long()
            if tuple(sample.shape[1:]) != art.input_shape:
                raise PwmprError(f"its inputs have shape {tuple(sample.shape[1:])}, the model takes {art.input_shape}")
            if len(sample):
                parts.append(sample)
                notes.append(f"{len(sample)} {split}")
        notes = [f"{sum(len(p) for p in parts)} from data set {data!r} ({', '.join(notes)})"]
    except (PwmprError, OSError) as exc:
        parts, notes = [], [f"data set {data!r} unavailable ({str(exc).splitlines()[0]})"]
    have = sum(len(p) for p in parts)
    tokens = not input_dtype_of(art.model).is_floating_point
    if have < n:
        gen = torch.Generator().manual_seed(seed)
        shape = (n - have, *art.input_shape)
        parts.append(torch.randint(0, art.num_classes, shape, generator=gen) if tokens else torch.randn(shape,
                                                                                                     generator=gen))
        notes.insert(0 if not have else len(notes), f"{n - have} random {'token ids' if tokens else 'normal'}")
    x = torch.cat(parts).numpy()
    return (x.astype(np.int64) if tokens else x.astype(np.float32)), "; ".join(notes)


def _check_options(onnx_weights: str, provider: str, opset: int, n_inputs: int, timing_runs: int) -> list[str]:
    """Check the export options before any work; returns the onnxruntime providers to ask for."""
    if onnx_weights not in onnx_graph.ENCODINGS:
        raise PwmprError(f"--onnx-weights must be one of {', '.join(onnx_graph.ENCODINGS)}, got {onnx_weights!r}")
    onnx_graph.check_opset(opset)
    if n_inputs < N_INPUTS:
        raise PwmprError(f"validation needs at least {N_INPUTS} inputs, got {n_inputs}")
    if timing_runs < 1:
        raise PwmprError(f"--timing-runs must be >= 1, got {timing_runs}")
    return validate.requested_providers(provider)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PwmprError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise PwmprError(f"--out {out} is not empty; choose a new folder (an export is never mixed with other files)")
    ancestor = next((p for p in out.absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise PwmprError(f"--out {out} cannot be created: {ancestor} is a file, not a folder")


def _staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise PwmprError(f"--out {out} is not writable: {exc.strerror or exc}") from None


def scores_only(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` returning only its class scores (:func:`pwmpr.probe.class_scores`): a shallow copy whose class
    overrides ``forward``, so it shares the model's parameters under their own names (docs/method.md, "Reading the
    forward")."""
    base = type(model)
    view = copy.copy(model)
    own = view.__dict__.pop("forward", None)  # a forward set on the object (a wrapper's hook) runs as it would
    for hooks in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
        if hooks in view.__dict__:  # the model's own output hooks expect what it returns, not the scores alone
            view.__dict__[hooks] = type(view.__dict__[hooks])()

    # One named input, as the export passes it: torch.export reads a ``*args`` forward as one tuple argument,
    # which the dynamic batch dim cannot describe, and would fall back to the TorchScript exporter every time.
    def forward(self, x):
        return class_scores(own(x) if own is not None else base.forward(self, x))

    try:
        view.__class__ = type(base.__name__, (base,), {"forward": forward, "__module__": base.__module__})
    except (TypeError, AttributeError) as exc:  # a class that cannot be subclassed so (a scripted module, say)
        raise PwmprError(f"the model returns more than its class scores, and pwmpr cannot export only those from a "
                         f"{base.__name__}: {exc}; return the class scores as one tensor") from None
    return view


def _torch_latency(model: torch.nn.Module, x: np.ndarray, runs: int, device: str) -> dict[str, float]:
    model = model.to(device)
    out = {}
    with torch.inference_mode():
        for b in TIMING_BATCHES:
            batch = torch.from_numpy(x[:b])
            out[str(b)] = validate.latency_ms(lambda batch=batch: model(batch.to(device)).cpu(), runs)
    model.to("cpu")
    return out


class _Agreement:
    """Agreement with the PyTorch reference, widened to the model's own float32 spread only when needed."""

    def __init__(self, model: torch.nn.Module, x: np.ndarray, ref: np.ndarray):
        self.model, self.x, self.ref = model, x, ref
        self.sensitivity: float | None = None  # measured once, on the first disagreement

    def __call__(self, got: np.ndarray) -> validate.Agreement:
        agree = validate.measure_agreement(self.ref, got)
        if agree.ok or not np.isfinite(agree.max_diff):
            return agree
        if self.sensitivity is None:
            self.sensitivity = validate.float32_sensitivity(self.model, self.x)
        return validate.measure_agreement(self.ref, got, floor=self.sensitivity)


def _check_encoding(name: str, proto: onnx.ModelProto, providers: list[str], provider: str, x: np.ndarray,
                    agreement: _Agreement, runs: int, short: _Agreement | None = None
                    ) -> tuple[dict[str, Any], bytes, list[str]]:
    """Checker, session, agreement (also on ``short``'s shorter sequences when given) and latency of one encoding;
    returns (report row, bytes, failures)."""
    failures: list[str] = []
    try:
        onnx.checker.check_model(proto, full_check=not proto.graph.sparse_initializer)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        failures.append(f"{name}: onnx.checker rejects it: {str(exc).strip().splitlines()[0]}")
    blob = proto.SerializeToString()
    sess = validate.open_session(blob, providers)
    validate.check_provider(provider, sess.providers)
    try:
        return _run_encoding(name, sess, blob, x, agreement, runs, short, failures)
    except validate.ort_errors() as exc:  # a graph that loads but cannot run these inputs (a batch fixed in it)
        text = " ".join(str(exc).split())[:300]
        failures.append(f"{name}: onnxruntime cannot run it on the validation inputs: {text}")
        return {"size_bytes": len(blob), "providers": sess.providers}, blob, failures


def _run_encoding(name: str, sess, blob: bytes, x: np.ndarray, agreement: _Agreement, runs: int,
                  short: _Agreement | None, failures: list[str]) -> tuple[dict[str, Any], bytes, list[str]]:
    agree = agreement(sess.run(x))
    if not agree.ok:
        failures.append(f"{name}: onnxruntime differs from PyTorch (max |diff| {agree.max_diff:.3g}, tolerance "
                        f"{agree.tolerance:.3g}, top-1 mismatches {agree.n_top1_mismatch}/{agree.n_top1_checked})")
    latency = {str(b): validate.latency_ms(lambda b=b: sess.run(x[:b]), runs) for b in TIMING_BATCHES}
    row = {"size_bytes": len(blob), **agree.to_dict(), "latency_ms": latency,
           "session_start_s": sess.start_s, "providers": sess.providers}
    if short is not None:
        agree = short(sess.run(short.x))
        row["short_sequence"] = {"length": short.x.shape[1], **agree.to_dict()}
        if not agree.ok:
            failures.append(f"{name}: onnxruntime differs from PyTorch on sequences of {short.x.shape[1]} tokens "
                            f"(max |diff| {agree.max_diff:.3g}, top-1 mismatches {agree.n_top1_mismatch}/"
                            f"{agree.n_top1_checked})")
    return row, blob, failures


def export_run(run_dir: Path | str, out: Path | str | None = None, *, model: torch.nn.Module | None = None,
               **options: Any) -> dict[str, Any]:
    """Export the final model of ``run_dir`` into ``out`` (default ``RUN_DIR/export``); returns the export report.

    ``model``: the object a ``pwmpr.grow_module`` run grew. Takes the options of :func:`export_artifact`.
    """
    out = Path(out) if out is not None else Path(run_dir) / "export"
    held = lock_run_dir_for_reading(run_dir) if Path(run_dir).is_dir() else None  # no grow writes it meanwhile
    try:
        report = export_artifact(read_run_artifact(run_dir, model), out, **options)
    finally:
        if held is not None:
            held.release()
    report["run_dir"] = str(run_dir)
    return report


def export_artifact(art: Artifact, out: Path | str, *, onnx_weights: str = "packed", provider: str = "auto",
                    opset: int = onnx_graph.MIN_OPSET, n_inputs: int = N_INPUTS, timing_runs: int = 20,
                    all_encodings: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a masked model into the new (or empty) folder ``out``, validate it; write ``export_report.json``.

    Args:
        onnx_weights: encoding of ``model.onnx``: ``dense``, ``sparse`` or ``packed``.
        provider: onnxruntime execution provider: ``auto``, ``cpu`` or ``cuda`` (an error unless CUDA is used).
        opset: ONNX opset, at least 18.
        n_inputs: validation inputs (at least 64).
        timing_runs: timed calls per latency figure (the median is reported).
        all_encodings: also keep ``model.dense.onnx``, ``model.sparse.onnx`` and ``model.packed.onnx``.

    Raises:
        PwmprError: bad arguments, or any failed check (nothing is left in ``out`` then).
    """
    say = log or (lambda _msg: None)
    providers = _check_options(onnx_weights=onnx_weights, provider=provider, opset=opset, n_inputs=n_inputs,
                               timing_runs=timing_runs)
    out = Path(out)
    _check_out(out)
    _make_parent(out)
    with lock_beside(out, "export folder"):  # one export per --out at a time
        for stale in _stale_staging(out):  # left by an export that was killed: nobody else writes here now
            shutil.rmtree(stale, ignore_errors=True)
        _check_out(out)

        say("reading inputs and the PyTorch reference")
        x, input_note = validation_inputs(art, n_inputs)
        with torch.inference_mode():
            raw = art.model(torch.from_numpy(x))
            ref = class_scores(raw).numpy()
        if not isinstance(raw, torch.Tensor):  # a dict, a tuple: the ONNX graph and its checks read the scores alone
            art = dataclasses.replace(art, model=scores_only(art.model))
        meta = export_metadata(art)

        staging = _staging(out)
        try:
            report = _export_into(staging, art, meta, x, ref, onnx_weights, provider, providers, opset, timing_runs,
                                  all_encodings, say)
            report.update({"out": str(out), "inputs": input_note})
            rundir.atomic_write_json(staging / REPORT_FILE, report)
            _publish(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return report


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PwmprError(f"--out {out} cannot be created: {exc.strerror or exc}") from None


def _stale_staging(out: Path) -> list[Path]:
    """The ``.OUT.tmp-*`` staging folders beside ``out`` (only ever a dead export's while its lock is held)."""
    return [p for p in out.parent.glob(f".{out.name}.tmp-*") if p.is_dir()]


def _publish(staging: Path, out: Path) -> None:
    """Give the staged files ordinary permissions (umask) and rename the folder to ``out``."""
    umask = rundir.umask()
    for f in staging.iterdir():
        f.chmod(0o666 & ~umask)
    staging.chmod(0o777 & ~umask)
    if out.is_dir():
        out.rmdir()  # empty (checked before): the rename needs the name free
    os.replace(staging, out)


def _export_into(folder: Path, art: Artifact, meta: dict[str, Any], x: np.ndarray, ref: np.ndarray,
                 chosen: str, provider: str, providers: list[str], opset: int, runs: int, all_encodings: bool,
                 say: Callable[[str], None]) -> dict[str, Any]:
    failures: list[str] = []
    agreement = _Agreement(art.model, x, ref)

    # safetensors: written, then reloaded into the bare model (strict) and run.
    say("writing and reloading model.safetensors and masks.safetensors")
    write_export_files(folder, art, meta)
    model, masks = load_export(folder / MODEL_FILE, folder / MASKS_FILE, art.template)
    with torch.inference_mode():
        st_agree = validate.measure_agreement(ref, class_scores(model(torch.from_numpy(x))).numpy())
    if not st_agree.ok:
        failures.append(f"model.safetensors reloads to different outputs (max |diff| {st_agree.max_diff:.3g})")
    if not masks.equal(art.masks):
        failures.append("masks.safetensors reloads to different masks")

    # ONNX: one export (dynamo, else TorchScript), three encodings, each checked in onnxruntime.
    say(f"exporting ONNX (opset {opset})")
    dense = onnx_graph.export_dense(art.model, art.input_shape, opset)
    short = None
    if onnx_graph.dynamic_sequence(dense):  # also checked on sequences half the training length
        x_short = np.ascontiguousarray(x[:, : max(1, x.shape[1] // 2)])
        with torch.inference_mode():
            short = _Agreement(art.model, x_short, art.model(torch.from_numpy(x_short)).numpy())
    torch_device = "cpu"
    used = providers
    rows: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    params = dict(art.model.named_parameters())
    weights = {name: params[name].detach().numpy() for name in art.masks}
    for enc in onnx_graph.ENCODINGS:
        say(f"checking the {enc} encoding in onnxruntime")
        proto, info = onnx_graph.encode(dense, enc, weights)
        onnx_graph.set_metadata(proto, meta, enc, info)
        layers = info["layers"]
        row, blob, bad = _check_encoding(enc, proto, used, provider, x, agreement, runs, short)
        row["layers"] = {k: sum(1 for v in layers.values() if v == k) for k in onnx_graph.ENCODINGS}
        missing = sorted(set(art.masks) - set(layers))
        if missing:
            row["weights_not_found"] = missing
        rows[enc], blobs[enc] = row, blob
        failures += bad
        used = row["providers"]  # what onnxruntime really runs on: no repeated CUDA fallback after the first
        if validate.CUDA_EP in row["providers"] and torch.cuda.is_available():
            torch_device = "cuda"
    for row in rows.values():
        row["ratio_to_dense"] = row["size_bytes"] / rows["dense"]["size_bytes"]

    # The folding proof: after onnxruntime's basic optimisation the packed graph is the dense graph.
    say("checking that onnxruntime folds the packed decode away")
    dense_ops = validate.folded_op_counts(blobs["dense"], used)
    packed_ops = validate.folded_op_counts(blobs["packed"], used)
    rows["packed"]["folded"] = packed_ops == dense_ops and not any(op in packed_ops for op in packing.DECODE_OPS)
    rows["packed"]["optimized_ops"] = packed_ops

    if failures:
        raise PwmprError("export validation failed: " + "; ".join(failures))

    say("timing PyTorch eager")
    torch_ms = _torch_latency(art.model, x, runs, torch_device)
    (folder / ONNX_FILE).write_bytes(blobs[chosen])
    if all_encodings:
        for enc, blob in blobs.items():
            (folder / encoding_file(enc)).write_bytes(blob)
    files = {f.name: f.stat().st_size for f in sorted(folder.iterdir())}
    return {
        "pwmpr_version": pwmpr.__version__,
        "model": art.model_name,
        "input_shape": list(art.input_shape),
        "num_classes": art.num_classes,
        "density": meta["density"],
        "masks_sha256": meta["masks_sha256"],
        "onnx_weights": chosen,
        "opset": opset,
        "provider": provider,
        "providers_requested": providers,
        "providers_used": sorted({p for r in rows.values() for p in r["providers"]}),
        "n_inputs": len(x),
        "dynamic_sequence": short is not None,
        "tolerance_rule": f"max |onnxruntime - PyTorch| <= {validate.RTOL:g} * max(1, max |PyTorch|), or the model's "
                          f"own float32 spread times {validate.SENSITIVITY_FACTOR:g} where larger; same top-1 where "
                          "the top-2 margin exceeds that",
        "float32_sensitivity": agreement.sensitivity,
        "safetensors": {"strict_load": True, **st_agree.to_dict()},
        "torch": {"device": torch_device, "threads": torch.get_num_threads(), "latency_ms": torch_ms},
        "timing": {"runs": runs, "statistic": "median", "batches": list(TIMING_BATCHES)},
        "encodings": rows,
        "files": files,
    }

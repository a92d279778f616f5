"""safetensors side of the export: ``model.safetensors``, ``masks.safetensors``, their metadata, ``pwmpr.load``.

``model.safetensors`` is the plain ``state_dict`` (masked weights zero), loadable strictly into
``create_model(...)`` without pwmpr; ``masks.safetensors`` holds one ``pack_bits(mask)`` uint8 tensor per
prunable weight under its name. Both carry ``{"format": "pt", "pwmpr": "<JSON>"}`` (``export_metadata``).
Reading never runs code from a file: no pickle, no ``torch.load``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import pwmpr
from pwmpr import rundir
from pwmpr.checkpoint import load_state
from pwmpr.errors import PwmprError
from pwmpr.export import packing
from pwmpr.masks import MaskSet
from pwmpr.models import create_model
from pwmpr.probe import declared_dtype_name, dtype_named

MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
SCHEMA = 1


@dataclass
class Artifact:
    """A trained masked model with what is known about it: the input of every export."""

    model: nn.Module
    masks: MaskSet
    model_name: str
    num_classes: int
    input_shape: tuple[int, ...]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    history_sha256: str | None = None
    template: nn.Module | None = None  # the model object a python:<class> run was grown from (pwmpr.export_grown)


def build_model(name: str, num_classes: int, input_shape, state: dict[str, Tensor], masks: MaskSet | None,
                source: str, kwargs: dict[str, Any] | None = None, like: nn.Module | None = None,
                input_dtype: Any = None) -> nn.Module:
    """``create_model(...)`` (a CPU copy of ``like`` when given) with ``state`` loaded strictly and ``masks``
    applied, in eval mode; ``input_dtype``: the token-id dtype the file records (``"int64"``), if any."""
    if not isinstance(name, str):
        raise PwmprError(f"{source}: model name must be a string, got {name!r}")
    try:
        model = copy.deepcopy(like).cpu() if like is not None else create_model(
            name, num_classes, input_shape, input_dtype=dtype_named(input_dtype, source), **(kwargs or {}))
    except TypeError as exc:
        raise PwmprError(f"{source}: model arguments do not suit {name!r}: {exc}") from None
    try:
        load_state(model, state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PwmprError(f"{source}: weights do not fit model {name!r}: {first}") from None
    if masks is not None:
        masks.check(model)
        masks.apply(model)
    return model.eval()


def _meta_fields(meta: dict[str, Any], source: str) -> tuple[str, int, tuple[int, ...]]:
    try:
        model = meta["model"]
        name = model["name"] if isinstance(model, dict) else model
        return name, int(meta["num_classes"]), tuple(int(s) for s in meta["input_shape"])
    except (KeyError, TypeError, ValueError):
        raise PwmprError(f"{source}: pwmpr metadata lacks the model name, num_classes or input_shape") from None


# -- run folders ------------------------------------------------------------------------------
def read_run_artifact(run_dir: Path | str, like: nn.Module | None = None) -> Artifact:
    """The final model of a run folder (``final.safetensors``) with its config, summary and history; ``like``: the
    model object a ``python:<class>`` run was grown from (its weights are replaced by the run's)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise PwmprError(f"run folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise PwmprError(f"{run_dir} is not a run folder (not a directory)")
    final = run_dir / rundir.FINAL
    if not final.is_file():
        raise PwmprError(f"{run_dir} has no {rundir.FINAL}: the run has not finished (continue it with "
                         f"pwmpr grow --resume {run_dir})")
    art = read_final(final, like)
    history_file = run_dir / rundir.HISTORY
    if history_file.is_file():
        raw = history_file.read_bytes()
        try:
            art.history = rundir.read_history(run_dir)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PwmprError(f"{history_file} is not readable JSON lines") from None
        art.history_sha256 = hashlib.sha256(raw).hexdigest()
    return art


def read_final(path: Path | str, like: nn.Module | None = None) -> Artifact:
    """A run's ``final.safetensors`` (tensors ``model/<key>`` and ``mask/<name>``) as an Artifact (the model built
    as a copy of ``like`` when given)."""
    path = Path(path)
    tensors, meta = rundir.load_tensors(path)
    if meta.get("kind") not in ("final", "checkpoint"):
        raise PwmprError(f"{path} is not a pwmpr run file (metadata kind {meta.get('kind')!r})")
    config = meta.get("config") or {}
    meta = {**meta, "model": config.get("model")}
    name, num_classes, input_shape = _meta_fields(meta, str(path))
    masks = MaskSet(rundir.split_prefix(tensors, rundir.MASK_PREFIX))
    state = rundir.split_prefix(tensors, rundir.MODEL_PREFIX)
    model = build_model(name, num_classes, input_shape, state, masks, str(path), like=like,
                        input_dtype=meta.get("input_dtype"))
    return Artifact(model, masks, name, num_classes, input_shape, config=config, summary=meta.get("summary") or {},
                    template=like)


# -- export files -----------------------------------------------------------------------------
def export_metadata(art: Artifact) -> dict[str, Any]:
    """The metadata JSON shared by ``model.safetensors``, ``masks.safetensors`` and ``model.onnx``."""
    s = art.summary
    shapes = {n: list(m.shape) for n, m in art.masks.items()}
    rows = [{k: r.get(k) for k in ("phase", "stage", "density", "n_nonzero", "val_acc")} for r in art.history]
    return {
        "schema": SCHEMA,
        "pwmpr_version": pwmpr.__version__,
        "model": {"name": art.model_name, "args": {"num_classes": art.num_classes,
                                                   "input_shape": list(art.input_shape)}, "kwargs": {}},
        "input_shape": list(art.input_shape),
        "input_dtype": declared_dtype_name(art.model),
        "num_classes": art.num_classes,
        "density": art.masks.density(),
        "n_nonzero": art.masks.n_nonzero(),
        "n_total": art.masks.n_total(),
        "layer_density": art.masks.layer_density(),
        "layer_shapes": shapes,
        "seed_density": s.get("seed_density"),
        "discovered_density": s.get("discovered_density"),
        "rho_star": s.get("rho_star"),
        "fit": s.get("fit"),
        "stop_reason": s.get("stop_reason"),
        "method": s.get("method", art.config.get("method")),
        "data": s.get("data", art.config.get("data")),
        "test_acc": s.get("test_acc"),
        "config": art.config,
        "history": {"n_rows": len(art.history), "sha256_history_jsonl": art.history_sha256, "rows": rows},
        "masks_encoding": {"dtype": "uint8", "layout": "flattened in C order",
                           "packing": f"numpy.packbits(mask.reshape(-1), bitorder='{packing.BITORDER}')",
                           "shapes": "layer_shapes"},
        "masks_sha256": packing.masks_digest(art.masks),
    }


def write_export_files(folder: Path, art: Artifact, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``masks.safetensors`` into ``folder``."""
    state = {k: v.detach().cpu().contiguous() for k, v in art.model.state_dict().items()}
    rundir.save_tensors(Path(folder) / MODEL_FILE, state, {**meta, "kind": "model"})
    bits = {n: torch.from_numpy(packing.pack_bits(m)) for n, m in art.masks.items()}
    rundir.save_tensors(Path(folder) / MASKS_FILE, bits, {**meta, "kind": "masks"})


def read_masks_file(path: Path | str) -> tuple[MaskSet, dict[str, Any]]:
    """The MaskSet of a ``masks.safetensors`` file, checked against its shapes and sha256."""
    path = Path(path)
    tensors, meta = rundir.load_tensors(path)
    if meta.get("kind") != "masks":
        raise PwmprError(f"{path} is not a pwmpr masks file (metadata kind {meta.get('kind')!r})")
    shapes = meta.get("layer_shapes")
    if not isinstance(shapes, dict):
        raise PwmprError(f"{path}: pwmpr metadata lacks layer_shapes")
    if set(shapes) != set(tensors):
        raise PwmprError(f"{path}: masks {sorted(set(tensors) ^ set(shapes))} are not both in the file and its "
                         "metadata")
    masks = MaskSet({n: torch.from_numpy(packing.unpack_bits(tensors[n], shapes[n], f"{path}: {n}"))
                     for n in tensors})
    if meta.get("masks_sha256") and packing.masks_digest(masks) != meta["masks_sha256"]:
        raise PwmprError(f"{path}: masks do not match the sha256 in its metadata (the file was altered)")
    return masks, meta


def read_model_file(path: Path | str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict and metadata of a ``model.safetensors`` file."""
    path = Path(path)
    tensors, meta = rundir.load_tensors(path)
    if meta.get("kind") != "model":
        raise PwmprError(f"{path} is not a pwmpr model file (metadata kind {meta.get('kind')!r})")
    return tensors, meta


def load_export(model_path: Path, masks_path: Path | None, like: nn.Module | None = None) -> tuple[nn.Module, MaskSet]:
    """Model and masks from ``model.safetensors`` (+ ``masks.safetensors``; without it, masks = the nonzeros); the
    model is a copy of ``like`` when given."""
    state, meta = read_model_file(model_path)
    name, num_classes, input_shape = _meta_fields(meta, str(model_path))
    kwargs = meta["model"].get("kwargs") if isinstance(meta["model"], dict) else None
    masks, masks_meta = read_masks_file(masks_path) if masks_path is not None else (None, {})
    model = build_model(name, num_classes, input_shape, state, masks, str(model_path), kwargs, like,
                        meta.get("input_dtype"))
    if masks is not None and meta.get("masks_sha256") and masks_meta.get("masks_sha256") != meta["masks_sha256"]:
        raise PwmprError(f"{masks_path} belongs to another export than {model_path} (masks sha256 differs)")
    return model, masks if masks is not None else MaskSet.from_weights(model)


def folder_kind(path: Path) -> str:
    """``"run"`` for a run folder (``final.safetensors``), ``"export"`` for an export folder; PwmprError otherwise."""
    if (path / rundir.FINAL).is_file():
        return "run"
    if (path / MODEL_FILE).is_file():
        return "export"
    raise PwmprError(f"{path} is neither a run folder ({rundir.FINAL}) nor an export folder ({MODEL_FILE})")


def load(path: Path | str, *, trust_remote_code: bool = False) -> tuple[nn.Module, MaskSet]:
    """Rebuild a masked model, in eval mode, from a run or export folder or one of their safetensors files.

    A model recorded as ``package.module:function`` is rebuilt only with ``trust_remote_code=True`` (importing it
    runs its code). To fine-tune: ``model.train()``, and ``masks.apply(model)`` after each optimizer step.

    Returns:
        ``(model, masks)``.

    Raises:
        PwmprError: a missing, foreign, truncated or inconsistent file.
    """
    from pwmpr.models import trusted_code

    with trusted_code(bool(trust_remote_code)):
        return _load_file(Path(path))


def _load_file(path: Path) -> tuple[nn.Module, MaskSet]:
    if not path.exists():
        raise PwmprError(f"not found: {path}")
    if path.is_dir():
        if folder_kind(path) == "run":
            art = read_run_artifact(path)
            return art.model, art.masks
        masks = path / MASKS_FILE
        return load_export(path / MODEL_FILE, masks if masks.is_file() else None)
    _, meta = rundir.load_tensors(path)
    kind = meta.get("kind")
    if kind in ("final", "checkpoint"):
        art = read_final(path)
        return art.model, art.masks
    if kind == "model":
        masks = path.parent / MASKS_FILE
        return load_export(path, masks if masks.is_file() else None)
    if kind == "masks":
        model = path.parent / MODEL_FILE
        if not model.is_file():
            raise PwmprError(f"{path} holds only masks; {MODEL_FILE} is not beside it")
        return load_export(model, path)
    raise PwmprError(f"{path} is not a pwmpr safetensors file (no pwmpr metadata)")

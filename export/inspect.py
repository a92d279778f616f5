"""``pwmpr inspect``: the per-layer density table and metadata of a run folder, an export, a .safetensors or .onnx file.

Every file is checked on the way and nothing from it is executed; a bad file raises a one-line PwmprError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pwmpr import rundir
from pwmpr.errors import PwmprError
from pwmpr.export import safetensors_io as sio
from pwmpr.masks import MaskSet


@dataclass
class Layer:
    """One prunable weight: its shape, the entries its mask keeps (``n_kept``), the nonzero entries (``n_nonzero``).

    Either is None where unknown.
    """

    name: str
    shape: list[int]
    n_total: int
    n_kept: int | None
    n_nonzero: int | None

    @property
    def density(self) -> float:
        """Fraction kept by the mask (fraction nonzero where there is no mask)."""
        count = self.n_kept if self.n_kept is not None else self.n_nonzero or 0
        return count / self.n_total if self.n_total else 0.0


@dataclass
class Inspection:
    """What ``pwmpr inspect`` shows."""

    path: str
    kind: str
    layers: list[Layer]
    metadata: dict[str, Any] = field(default_factory=dict)

    def total(self, what: str) -> int | None:
        """Sum of ``n_total``, ``n_kept`` or ``n_nonzero`` over the layers (None if any layer lacks it)."""
        values = [getattr(layer, what) for layer in self.layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def density(self) -> float:
        """Overall fraction kept (nonzero where there is no mask)."""
        n = self.total("n_total") or 0
        count = self.total("n_kept")
        count = count if count is not None else self.total("n_nonzero") or 0
        return count / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": self.path, "kind": self.kind, "density": self.density, "n_total": self.total("n_total"),
                "n_kept": self.total("n_kept"), "n_nonzero": self.total("n_nonzero"),
                "layers": [{"name": x.name, "shape": x.shape, "n_total": x.n_total, "n_kept": x.n_kept,
                            "n_nonzero": x.n_nonzero, "density": x.density} for x in self.layers],
                "metadata": self.metadata}


def _layers(masks: MaskSet | None, model: nn.Module | None, names: list[str] | None = None) -> list[Layer]:
    params = dict(model.named_parameters()) if model is not None else {}
    rows = []
    for name in names or list(masks or {}):
        ref = masks[name] if masks is not None else params[name]
        rows.append(Layer(name, list(ref.shape), ref.numel(), int(masks[name].sum()) if masks is not None else None,
                          int((params[name] != 0).sum()) if model is not None else None))
    return rows


def inspect_path(path: Path | str) -> Inspection:
    """Inspect a run folder, an export folder, a ``.safetensors`` file or a ``.onnx`` file.

    Raises:
        PwmprError: a missing, foreign, truncated or inconsistent file.
    """
    path = Path(path)
    if not path.exists():
        raise PwmprError(f"not found: {path}")
    if path.is_dir():
        if sio.folder_kind(path) == "run":
            art = sio.read_run_artifact(path)
            return Inspection(str(path), "run folder", _layers(art.masks, art.model), sio.export_metadata(art))
        return _inspect_safetensors(path / sio.MODEL_FILE, kind="export folder", shown=path)
    if path.suffix.lower() == ".onnx":
        return _inspect_onnx(path)
    return _inspect_safetensors(path)


def _inspect_safetensors(path: Path, kind: str | None = None, shown: Path | None = None) -> Inspection:
    _, meta = rundir.load_tensors(path)  # validates the header and every tensor's bytes
    what = meta.get("kind")
    shown = shown or path
    if what in ("final", "checkpoint"):
        art = sio.read_final(path)
        return Inspection(str(shown), kind or f"run {what} file", _layers(art.masks, art.model),
                          sio.export_metadata(art))
    if what == "model":
        masks_file = path.parent / sio.MASKS_FILE
        has_masks = masks_file.is_file()
        model, masks = sio.load_export(path, masks_file if has_masks else None)
        return Inspection(str(shown), kind or "model.safetensors",
                          _layers(masks if has_masks else None, model, list(masks)), meta)
    if what == "masks":
        model_file = path.parent / sio.MODEL_FILE
        if model_file.is_file():  # also checks the masks against the weights' shapes
            model, masks = sio.load_export(model_file, path)
            return Inspection(str(shown), kind or "masks.safetensors", _layers(masks, model), meta)
        masks, _ = sio.read_masks_file(path)
        return Inspection(str(shown), kind or "masks.safetensors", _layers(masks, None), meta)
    raise PwmprError(f"{path} is a safetensors file without pwmpr metadata: not written by pwmpr")


def _inspect_onnx(path: Path) -> Inspection:
    import onnx
    from google.protobuf.message import DecodeError

    from pwmpr.export import onnx_graph

    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise PwmprError(f"{path} is not a readable ONNX file ({str(exc).strip() or type(exc).__name__})") from None
    except OSError as exc:
        raise PwmprError(f"cannot read {path}: {exc.strerror or exc}") from None
    meta = onnx_graph.read_metadata(model, str(path))
    weights = onnx_graph.weights_from_onnx(model, str(path))
    props = {p.key: p.value for p in model.metadata_props if p.key.startswith("pwmpr_")}
    try:
        density = json.loads(props.get("pwmpr_layer_density", "{}"))
        kept = {n: round(float(density[n]) * weights[n].size) for n in weights if n in density}
    except (json.JSONDecodeError, TypeError, ValueError):
        raise PwmprError(f"{path}: unreadable pwmpr_layer_density metadata") from None
    layers = [Layer(n, list(w.shape), int(w.size), kept.get(n), int(np.count_nonzero(w))) for n, w in weights.items()]
    flat = {k: v for k, v in props.items() if k != "pwmpr_layer_density"}
    meta = {**flat, **meta, "opset": onnx_graph.default_opset(model)}
    return Inspection(str(path), f"ONNX ({meta['onnx_weights'].get('encoding', '?')} weights)", layers, meta)

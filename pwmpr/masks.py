"""MaskSet: the one mask abstraction (parameter name -> bool tensor) used by every part of pwmpr.

Prunable weights: every Conv and Linear weight (shortcuts and classifier included), the matrix of any other layer of
a matrix and a bias whose forward is a linear layer's (GPT-2's ``Conv1D``), and the input projections of
``nn.MultiheadAttention``; biases, embeddings, norm parameters and weights tied to another module's stay dense.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: The weights of ``nn.MultiheadAttention`` itself that are prunable (its output projection is a Linear).
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def prunable(model: nn.Module) -> list[str]:
    """Names of the prunable weights of ``model``, in module order: every Conv and Linear weight (and that of a layer
    of a matrix and a bias alone, as GPT-2's ``Conv1D``), and the input projections of ``nn.MultiheadAttention``
    (packed ``in_proj_weight`` or the separate q/k/v weights). A weight
    tied to another module's (a language model's head sharing its token embedding) stays dense, as the other use
    would be masked with it."""
    return [name for name, tied in _contraction_weights(model) if not tied]


def tied_weights(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear weights (and attention input projections) that ``prunable`` leaves dense because
    another module holds the same Parameter (a tied head), in module order."""
    return [name for name, tied in _contraction_weights(model) if tied]


def _contraction_weights(model: nn.Module) -> list[tuple[str, bool]]:
    """``(name, tied)`` of every Conv/Linear weight and attention input projection, in module order."""
    owners: dict[int, int] = {}  # parameter -> how many distinct modules hold it (a module used twice is one)
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    out = []
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, PRUNABLE_TYPES) or _linear_like(m):
            candidates = ["weight"]
        elif isinstance(m, nn.MultiheadAttention):
            candidates = [p for p in _ATTENTION_WEIGHTS if getattr(m, p, None) is not None]
        else:
            continue
        held = [(p, m._parameters.get(p)) for p in candidates]  # a parametrized weight is computed: left dense
        out += [(prefix + p, owners[id(param)] > 1) for p, param in held if param is not None]
    return out


def _linear_like(m: nn.Module) -> bool:
    """A layer of a matrix and a bias and nothing else, under another class than ``nn.Linear``, whose forward is
    a linear layer's (transformers' ``Conv1D`` of GPT-2, ``x @ W + b``): its matrix is prunable like a Linear
    weight (:func:`unit_axis` says where its outputs are). A table (``nn.Embedding``), a matrix without a bias,
    or a module whose forward does anything else is not taken for one."""
    return _layout(m) is not None


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, int | None] = weakref.WeakKeyDictionary()


def _layout(m: nn.Module) -> int | None:
    """For a module of a matrix ``W`` and a bias ``b`` alone: 1 when its forward on a vector ``x`` is
    ``x @ W + b`` (outputs along W's dim 1), 0 when it is ``x @ W^T + b`` (along dim 0, as a Linear's); None for
    anything else. Read once per module, on a random vector (the matrix and bias as they are then)."""
    if m in _LAYOUTS:
        return _LAYOUTS[m]
    layout = None
    if not isinstance(m, (nn.Embedding, *PRUNABLE_TYPES)) and set(m._parameters) == {"weight", "bias"}:
        w, b = m._parameters["weight"], m._parameters["bias"]
        if w is not None and b is not None and w.dim() == 2 and b.dim() == 1 and b.numel() in w.shape:
            layout = _probe_layout(m, w.detach(), b.detach())
    _LAYOUTS[m] = layout
    return layout


def _probe_layout(m: nn.Module, w: Tensor, b: Tensor) -> int | None:
    """The layout :func:`_layout` names, read from the module's code alone: its forward on a random vector, with a
    random matrix and bias of its own (float64, on the host) in place of the module's, compared with both
    layouts' results. The module's values, device, mode and the global random state are left as they are."""
    g = torch.Generator().manual_seed(0)
    wr = torch.randn(tuple(w.shape), generator=g, dtype=torch.float64)
    br = torch.randn(tuple(b.shape), generator=g, dtype=torch.float64)
    training = m.training
    try:
        m.train(False)
        for axis, n_in, compute in ((1, w.shape[0], lambda x: x @ wr + br), (0, w.shape[1], lambda x: x @ wr.T + br)):
            if w.shape[axis] != b.numel():
                continue
            x = torch.randn(2, n_in, generator=g, dtype=torch.float64)
            try:
                # no torch function mode (a watch mode of pwmpr's) sees the probe
                with torch.no_grad(), torch._C.DisableTorchFunction(), torch.random.fork_rng(devices=[]):
                    out = torch.func.functional_call(m, {"weight": wr, "bias": br}, (x,))
                    same = isinstance(out, Tensor) and out.shape == (2, b.numel()) and torch.allclose(
                        out.double(), compute(x), rtol=1e-6, atol=1e-9)
            except Exception:  # noqa: BLE001 - a forward that does not take one vector is no linear layer
                continue
            if same:
                return axis
    finally:
        m.train(training)
    return None


def unit_axis(model: nn.Module, name: str) -> int:
    """The dim of prunable weight ``name`` that runs over its output units: 0 (a Conv's output channels, a
    Linear's output features), or 1 for a matrix its layer applies as ``x @ W + b`` (GPT-2's ``Conv1D``)."""
    module, _, _ = name.rpartition(".")
    owner = model.get_submodule(module) if module else model
    return 1 if not isinstance(owner, PRUNABLE_TYPES) and _layout(owner) == 1 else 0


def flatten_layers(tensors: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """The tensors of ``names`` flattened and joined in that order: one global vector over the layers."""
    if not names:
        return torch.empty(0)
    return torch.cat([tensors[n].reshape(-1) for n in names])


def split_layers(flat: Tensor, like: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
    """A global vector (layers in ``names`` order) cut back into per-layer tensors shaped like ``like``'s."""
    chunks = flat.split([like[n].numel() for n in names])
    return {n: c.view(like[n].shape) for n, c in zip(names, chunks, strict=True)}


def split_positions(positions: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Positions in a global vector -> per layer, the sorted positions inside that layer (layer sizes ``sizes``)."""
    bounds = torch.tensor([0, *sizes], device=positions.device).cumsum(0)
    positions = torch.sort(positions).values
    out = []
    for i in range(len(sizes)):
        lo, hi = torch.searchsorted(positions, bounds[i : i + 2]).tolist()
        out.append(positions[lo:hi] - bounds[i])
    return out


class MaskSet(Mapping[str, Tensor]):
    """A bool mask per prunable weight: True keeps the weight, False holds it at zero.

    ``masks``: ``{parameter name: bool tensor of its shape}`` (0/1 tensors are converted).
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self._masks: dict[str, Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(mask, Tensor):
                raise PwmprError(f"mask {name!r} must be a tensor, got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                if not torch.all((mask == 0) | (mask == 1)):
                    raise PwmprError(f"mask {name!r} must hold only 0 and 1 (or be a bool tensor)")
                mask = mask != 0
            self._masks[name] = mask.detach()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def dense(cls, model: nn.Module) -> MaskSet:
        """All-True masks for every prunable weight of ``model`` (density 1)."""
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable(model)})

    @classmethod
    def from_weights(cls, model: nn.Module) -> MaskSet:
        """Masks that keep exactly the nonzero entries of each prunable weight."""
        params = dict(model.named_parameters())
        return cls({n: params[n].detach() != 0 for n in prunable(model)})

    @classmethod
    def checked(cls, model: nn.Module, masks: Mapping[str, Tensor] | None) -> MaskSet:
        """``masks`` as a MaskSet checked against ``model`` (None: no masks, every weight dense); see :meth:`check`."""
        masks = cls({}) if masks is None else masks if isinstance(masks, MaskSet) else cls(masks)
        masks.check(model)
        return masks

    # -- Mapping protocol ---------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"MaskSet({len(self)} layers, density={self.density():.4f})"

    # -- counts and densities -----------------------------------------------------------------
    def n_total(self) -> int:
        """Number of prunable weight entries covered by the masks."""
        return sum(m.numel() for m in self._masks.values())

    def n_nonzero(self) -> int:
        """Number of kept (True) entries."""
        return sum(int(m.sum()) for m in self._masks.values())

    def density(self) -> float:
        """Fraction of prunable entries kept, over all layers."""
        total = self.n_total()
        return self.n_nonzero() / total if total else 0.0

    def layer_density(self) -> dict[str, float]:
        """Fraction kept in each layer."""
        return {n: (float(m.float().mean()) if m.numel() else 0.0) for n, m in self._masks.items()}

    def layer_nonzero(self) -> dict[str, int]:
        """Number of kept entries in each layer."""
        return {n: int(m.sum()) for n, m in self._masks.items()}

    # -- use with a model ---------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """Raise PwmprError for a mask of an unknown or non-prunable weight or of a wrong shape (missing: dense)."""
        params = dict(model.named_parameters())
        allowed = set(prunable(model))
        for name, mask in self._masks.items():
            if name not in params:
                raise PwmprError(f"mask {name!r} names no parameter of the model")
            if name not in allowed:
                raise PwmprError(f"mask {name!r} names a parameter that is not prunable (only Conv/Linear weights and "
                                 "attention projections are)")
            if tuple(mask.shape) != tuple(params[name].shape):
                raise PwmprError(
                    f"mask {name!r} has shape {tuple(mask.shape)} but the weight has shape {tuple(params[name].shape)}"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every masked-out weight of ``model`` in place."""
        self.check(model)
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            p = params[name]
            p.mul_(mask.to(device=p.device, dtype=p.dtype))

    def complete(self, model: nn.Module) -> MaskSet:
        """This MaskSet plus all-True masks for prunable weights it does not cover."""
        self.check(model)
        params = dict(model.named_parameters())
        full = {n: self._masks.get(n, torch.ones_like(params[n], dtype=torch.bool)) for n in prunable(model)}
        return MaskSet({n: m.to(params[n].device) for n, m in full.items()})

    # -- conversions --------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> MaskSet:
        """A copy with every mask on ``device``."""
        return MaskSet({n: m.to(device) for n, m in self._masks.items()})

    def clone(self) -> MaskSet:
        """An independent copy."""
        return MaskSet({n: m.clone() for n, m in self._masks.items()})

    def to_dict(self) -> dict[str, Tensor]:
        """A plain ``{name: bool tensor}`` dict (contiguous CPU tensors, ready for safetensors)."""
        return {n: m.detach().cpu().contiguous() for n, m in self._masks.items()}

    def equal(self, other: Mapping[str, Tensor]) -> bool:
        """True when ``other`` has the same names and the same masks."""
        return set(self) == set(other) and all(
            torch.equal(self._masks[n].cpu(), other[n].cpu().bool()) for n in self._masks
        )

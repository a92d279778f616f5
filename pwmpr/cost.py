"""What training costs (docs/method.md, Cost): forward FLOPs of a masked network, and a run's cost vs one dense run.

Two conventions: density-weighted training FLOPs (3 x forward) and epoch-equivalents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pwmpr.graph.mode import WatchMode, WeightView
from pwmpr.graph.ops import Kind, Op
from pwmpr.masks import MaskSet, prunable, tied_weights
from pwmpr.probe import device_of, input_dtype_of, normalize_input_shape, run_forward, training_mode


# -- forward FLOPs ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFlops:
    """Forward multiply-accumulates of one prunable weight for one example."""

    sparse: int  # present weights x output positions
    dense: int  # all weights x output positions
    positions: int  # times each entry is used (output positions of a conv, tokens of a linear), summed over uses


@dataclass(frozen=True)
class FlopCount:
    """Forward multiply-accumulates (1 per MAC; docs/method.md, Cost) of the prunable weights for one example.

    ``sparse`` counts present weights only, ``dense`` all; non-prunable work (norms, attention products) is not counted.
    """

    sparse: int
    dense: int
    layers: dict[str, LayerFlops] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """sparse / dense: the fraction of dense forward cost this mask needs (0 for a model with no weights)."""
        return self.sparse / self.dense if self.dense else 0.0

    @property
    def training_step(self) -> int:
        """Sparse training cost of one example: forward + backward ~ 3x forward (docs/method.md, Cost; RigL)."""
        return 3 * self.sparse

    @property
    def dense_training_step(self) -> int:
        """Dense training cost of one example (3x the dense forward)."""
        return 3 * self.dense


class _WeightUses(WatchMode):
    """Records every use of a prunable weight in a contraction: ``(name, entries used, MACs per entry)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.uses: list[tuple[str, Tensor | None, int, float]] = []
        for name in tied_weights(model):  # dense, but its contractions cost like any other layer's
            p = model.get_parameter(name)
            self.put(p, WeightView(name, p.numel(), tuple(p.shape)))

    def handle(self, op: Op, func, args: tuple, kwargs: dict):
        out = func(*args, **kwargs)
        views = [(t, v) for t, v in self.tracked(args, kwargs) if isinstance(v, WeightView)]
        if not views:
            return out
        if op.kind is Kind.CONTRACT and isinstance(out, Tensor):
            t, view = views[0]
            self.uses.append((view.name, view.positions, t.numel(), _macs(op, args, t, out) / max(1, t.numel())))
        else:
            self.weight_result(op, func, args, kwargs, out, [v for _, v in views])
        return out


def _macs(op: Op, args: tuple, weight: Tensor, out: Tensor) -> float:
    """Dense multiply-accumulates of a contraction with ``weight`` (one example)."""
    if op.name == "linear" or op.name.startswith("conv"):
        return out.numel() * weight.numel() / max(1, weight.shape[0])
    if op.name == "einsum":
        lhs = args[0].replace(" ", "").split("->")[0].split(",")
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        sizes = {c: n for labels, t in zip(lhs, operands, strict=False) for c, n in zip(labels, t.shape, strict=False)}
        return float(math.prod(sizes.values()))
    a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
    return out.numel() * a.shape[-1]


@torch.no_grad()
def training_flops(model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int]) -> FlopCount:
    """Forward multiply-accumulates of the uses of prunable (and tied, always dense) weights in ``model``, dense and
    present weights only.

    Uses are read from one eval-mode forward on zeros (model left unchanged); a weight used twice counts twice.
    ``masks``: ``{weight name: bool mask}``; weights without one count as dense (None: all dense).

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or an ``input_shape`` the model cannot take.
    """
    masks = MaskSet.checked(model, masks)
    shape = normalize_input_shape(input_shape)
    mode = _WeightUses(model)
    with training_mode(model, False), mode.watching(model):
        run_forward(model, torch.zeros((1, *shape), device=device_of(model), dtype=input_dtype_of(model)))
    sparse = dict.fromkeys(prunable(model) + tied_weights(model), 0.0)
    dense = dict.fromkeys(sparse, 0.0)
    positions = dict.fromkeys(sparse, 0.0)
    for name, entries, n_used, per_entry in mode.uses:
        mask = masks[name].reshape(-1) if name in masks else None
        if mask is None:
            present = n_used
        elif entries is None:
            present = int(mask.sum())
        else:
            present = int(mask[entries.reshape(-1).to(mask.device)].sum())
        sparse[name] += present * per_entry
        dense[name] += n_used * per_entry
        positions[name] += per_entry
    layers = {n: LayerFlops(round(sparse[n]), round(dense[n]), round(positions[n])) for n in sparse}
    return FlopCount(sum(f.sparse for f in layers.values()), sum(f.dense for f in layers.values()), layers)


# -- a run's cost against a dense run ------------------------------------------------------------------
#: Training FLOPs per sample: forward, plus backward at about twice the forward.
TRAIN_FACTOR = 3.0
START = {"train_flops_total": 0.0, "epochs_total": 0}


def phase_cost(previous: dict[str, Any] | None, *, sparse_fwd: float, dense_fwd: float, n_train: int, epochs: int,
               reference_epochs: int) -> dict[str, float]:
    """The cost entries of a phase's history row: its training FLOPs and the run's totals and ratios so far.

    ``previous``: the row before (None for the first phase); ``sparse_fwd``/``dense_fwd``: forward FLOPs per sample.
    """
    prev = previous if previous is not None else START
    phase_flops = TRAIN_FACTOR * float(sparse_fwd) * n_train * epochs
    dense_run = TRAIN_FACTOR * float(dense_fwd) * n_train * reference_epochs
    total_flops = prev["train_flops_total"] + phase_flops
    total_epochs = prev["epochs_total"] + epochs
    return {"fwd_flops_sparse": float(sparse_fwd), "fwd_flops_dense": float(dense_fwd), "train_flops": phase_flops,
            "train_flops_total": total_flops, "epochs_total": total_epochs, "cost_flops": total_flops / dense_run,
            "cost_epochs": total_epochs / reference_epochs}


def projected_cost(row: dict[str, Any], *, sparse_fwd: float, epochs: int) -> float:
    """The run's ``cost_flops`` after ``epochs`` more epochs at forward FLOPs ``sparse_fwd`` per sample, following
    the history row ``row`` (the same training set and dense reference the row was costed with)."""
    per_fwd_epoch = row["train_flops"] / (row["fwd_flops_sparse"] * row["epochs"])  # TRAIN_FACTOR x training samples
    dense_run = row["train_flops_total"] / row["cost_flops"]
    return row["cost_flops"] + per_fwd_epoch * float(sparse_fwd) * epochs / dense_run


def guard_reach(row: dict[str, Any], *, gamma: float, phase_epochs: int, final_epochs: int, limit: float,
                max_density: float = 1.0) -> float:
    """The density where the cost guard (``limit`` dense runs) would stop growth that goes on after the history row
    ``row``, if every later step grows the present edges by ``gamma``: what the budget lets growth reach, whatever
    the accuracy curve does (docs/method.md, "Cost guard"). ``max_density`` when the budget gets there;
    ``row["density"]`` when the very next step would already pass ``limit``.

    Training FLOPs per epoch are interpolated between the row's and the dense network's as a power of density,
    ``f(d) = f_now (d / d_now)^a`` with ``f(1)`` dense: exact where FLOPs follow density (an MLP, ``a = 1``), and
    for a conv net, whose early, costly layers fill first, nearer than following density would be.
    """
    density = float(row["density"])
    if not (density > 0 and row.get("cost_flops") and row.get("epochs") and row.get("fwd_flops_sparse")):
        return density
    dense_run = row["train_flops_total"] / row["cost_flops"]
    dense_epoch = row["train_flops"] / row["epochs"] / dense_run * row["fwd_flops_dense"] / row["fwd_flops_sparse"]
    share = row["fwd_flops_sparse"] / row["fwd_flops_dense"]  # of a dense epoch's FLOPs, at this density
    power = math.log(share) / math.log(density) if 0 < share < 1 and density < 1 else 1.0
    cost = float(row["cost_flops"])
    while density < max_density:
        nxt = min(density * (1.0 + gamma), max_density)
        epoch = dense_epoch * min(1.0, share * (nxt / float(row["density"])) ** power)
        if cost + epoch * (phase_epochs + final_epochs) > limit:
            break
        cost += epoch * phase_epochs
        density = nxt
    return density

"""IMP: iterative magnitude pruning, the lottery-ticket baseline (OpenLTH conventions).

Each level trains, then removes ``prune_fraction`` of the remaining weights by global magnitude. The next level
starts by ``rewind`` (weights at ``rewind_step``, schedule replayed), ``lr-rewind`` (trained weights, schedule
replayed) or ``continue`` (fine-tune). Each level is one history row; IMP stops at ``target_density`` or after
``levels`` levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pwmpr.config import check
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet, flatten_layers, split_layers
from pwmpr.methods import METHODS, Decision, Method, RunContext, options_from_dict

VARIANTS = ("rewind", "lr-rewind", "continue")


@dataclass
class ImpOptions:
    """IMP's own knobs (``RunConfig.options`` of a run with ``method="imp"``; each field's help is its CLI flag's)."""

    variant: str = field(default="lr-rewind", metadata={"help": (
        "What a level starts from after pruning: rewind (weights rewound to --rewind-step, schedule replayed), "
        "lr-rewind (trained weights kept, schedule replayed) or continue (trained weights kept, fine-tuned for "
        "--continue-fraction x --epochs at --finetune-lr-scale x --lr).")})
    levels: int = field(default=10, metadata={"help": "Pruning levels after the dense level 0 at the most (so levels "
                                              "+ 1 trainings; 10 levels end at density 0.8^10 = 0.107)."})
    target_density: float = field(default=0.0, metadata={"help": "Stop at the first level at or below this density "
                                                         "(0: only --levels stops)."})
    prune_fraction: float = field(default=0.2, metadata={"help": "Fraction of the remaining weights pruned per "
                                                         "level, by global magnitude."})
    rewind_step: int = field(default=0, metadata={"help": "rewind: the global training step of level 0 whose weights "
                                                  "each level restarts from (0: the initialisation)."})
    continue_fraction: float = field(default=0.5, metadata={"help": "continue: epochs of levels 1.. as a fraction of "
                                                            "level 0's (--epochs)."})
    finetune_lr_scale: float = field(default=0.1, metadata={"help": "continue: learning rate of levels 1.. as a "
                                                            "fraction of --lr."})

    def __post_init__(self) -> None:
        check(self.variant in VARIANTS, "IMP variant", self.variant, f"one of {', '.join(VARIANTS)}")
        check(self.levels >= 0, "IMP levels", self.levels, ">= 0")
        check(0 <= self.target_density < 1, "IMP target_density", self.target_density, "in [0, 1)")
        check(0 < self.prune_fraction < 1, "IMP prune_fraction", self.prune_fraction, "in (0, 1)")
        check(self.rewind_step >= 0, "IMP rewind_step", self.rewind_step, ">= 0")
        check(0 < self.continue_fraction <= 1, "IMP continue_fraction", self.continue_fraction, "in (0, 1]")
        check(0 < self.finetune_lr_scale <= 1, "IMP finetune_lr_scale", self.finetune_lr_scale, "in (0, 1]")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ImpOptions:
        """Build from a config's ``options`` dict; unknown keys raise PwmprError."""
        return options_from_dict(cls, options, "IMP")


def prune_count(n_remaining: int, fraction: float = 0.2) -> int:
    """Weights to remove this level: ``ceil(fraction * remaining)`` (OpenLTH ``sparse_global``)."""
    return math.ceil(fraction * n_remaining)


@torch.no_grad()
def prune_global_magnitude(model: nn.Module, masks: MaskSet, fraction: float = 0.2) -> MaskSet:
    """Remove exactly ``ceil(fraction * remaining)`` smallest-|w| present weights over all layers (ties by position).

    Returns:
        A new MaskSet with ``prune_count(masks.n_nonzero(), fraction)`` fewer True entries.
    """
    params = dict(model.named_parameters())
    names = list(masks)
    kept = flatten_layers({n: masks[n].cpu() for n in names}, names).bool()
    values = flatten_layers({n: params[n].detach().abs().cpu().double() for n in names}, names)[kept]
    n_prune = min(prune_count(values.numel(), fraction), values.numel())
    # Stable sort: equal magnitudes leave in position order, so the count is exact and reproducible.
    order = torch.sort(values, stable=True).indices[:n_prune]
    new = kept.clone()
    new[kept.nonzero().squeeze(1)[order]] = False
    return MaskSet({n: m.to(masks[n].device) for n, m in split_layers(new, masks, names).items()})


@METHODS.register("imp")
class IterativeMagnitudePruning(Method):
    """Train dense, then prune 20% of the remaining weights by global magnitude and retrain, level after level."""

    name = "imp"
    records_test = True  # every level is a finished network: its test accuracy is a point of the curve

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.options = ImpOptions.from_options(dict(cfg.options))
        self.rewind_step = self.options.rewind_step if self.options.variant == "rewind" else None

    def phase_epochs(self, phase: int) -> int:
        if phase > 0 and self.options.variant == "continue":
            return max(1, math.ceil(self.options.continue_fraction * self.cfg.phase_epochs))
        return self.cfg.phase_epochs

    def phase_schedule(self, phase: int) -> str:
        # Each level is a complete training run, so it follows the final (full-training) schedule.
        return self.cfg.train.final_schedule

    def phase_lr(self, phase: int) -> float | None:
        if phase > 0 and self.options.variant == "continue":
            return self.cfg.train.base_lr * self.options.finetune_lr_scale
        return None

    def after_phase(self, ctx: RunContext) -> Decision:
        opts = self.options
        level = sum(1 for r in ctx.history if r.get("stage") == "phase") - 1
        density = ctx.masks.density()
        info: dict[str, Any] = {"level": level, "variant": opts.variant}
        if opts.target_density > 0 and density <= opts.target_density + 1e-12:
            return Decision(stop=True, reason="target-density", info=info)
        if level >= opts.levels:
            return Decision(stop=True, reason="max-levels", info=info)
        if ctx.masks.n_nonzero() <= 1:
            return Decision(stop=True, reason="nothing-left-to-prune", info=info)
        masks = prune_global_magnitude(ctx.model, ctx.masks, opts.prune_fraction)
        info["n_pruned"] = ctx.masks.n_nonzero() - masks.n_nonzero()
        if opts.variant == "rewind":
            if ctx.initial_state is None:
                raise PwmprError("IMP rewind has no weights to rewind to (no snapshot at the rewind step)")
            return Decision(masks=masks, rewind=ctx.initial_state, reset_optimizer=True, reason="prune", info=info)
        if opts.variant == "lr-rewind":
            return Decision(masks=masks, reset_optimizer=True, reason="prune", info=info)
        return Decision(masks=masks, reason="prune", info=info)

"""Dynamic sparse training baselines at a fixed density: RigL (Evci et al. 2020) and SET (Mocanu et al. 2018).

Both start from an ``erk`` or ``uniform`` random mask and rewire each layer after every ``update_epochs``
(``pwmpr.methods.rewire``, scope ``layer``): RigL regrows by ``|dL/dw|`` with a cosine-decayed fraction, SET
uniformly at a fixed one. docs/method.md, "Baselines: RigL and SET", gives the details and the departures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from pwmpr.config import check
from pwmpr.counting import floor_count, round_half_up, schedule_factor
from pwmpr.errors import PwmprError
from pwmpr.growth import GROWTH_RULES
from pwmpr.masks import MaskSet, prunable
from pwmpr.methods import METHODS, Decision, Method, RunContext, options_from_dict
from pwmpr.methods.rewire import cosine_decay, rewire

DISTRIBUTIONS = ("erk", "uniform")
DECAYS = ("cosine", "constant")


@dataclass
class RiglOptions:
    """RigL's knobs (``RunConfig.options`` of a run with ``method="rigl"``; each field's help is its CLI flag's)."""

    what: ClassVar[str] = "RigL"

    density: float = field(default=0.1, metadata={"help": "Fraction of prunable weights present, fixed through "
                                                  "training, in (0, 1]."})
    distribution: str = field(default="erk", metadata={"help": "Layer densities: erk (Erdos-Renyi-Kernel) or "
                                                       "uniform (every layer at --density)."})
    drop_fraction: float = field(default=0.3, metadata={"help": "Fraction of each layer's present weights dropped "
                                                        "(smallest |w|) and regrown at an update, in [0, 1)."})
    decay: str = field(default="cosine", metadata={"help": "How the drop fraction changes over the updates: cosine "
                                                   "(to 0 at --end-fraction) or constant."})
    update_epochs: int = field(default=1, metadata={"help": "Epochs between mask updates (the papers: 100 steps for "
                                                    "RigL, one epoch for SET)."})
    end_fraction: float = field(default=0.75, metadata={"help": "No mask update after this fraction of the training "
                                                        "epochs, in (0, 1]."})

    def __post_init__(self) -> None:
        w = self.what
        check(0 < self.density <= 1, f"{w} density", self.density, "in (0, 1]")
        check(self.distribution in DISTRIBUTIONS, f"{w} distribution", self.distribution,
              f"one of {', '.join(DISTRIBUTIONS)}")
        check(0 <= self.drop_fraction < 1, f"{w} drop fraction", self.drop_fraction, "in [0, 1)")
        check(self.decay in DECAYS, f"{w} decay", self.decay, f"one of {', '.join(DECAYS)}")
        check(self.update_epochs >= 1, f"{w} update epochs", self.update_epochs, ">= 1")
        check(0 < self.end_fraction <= 1, f"{w} end fraction", self.end_fraction, "in (0, 1]")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RiglOptions:
        """Build from a config's ``options`` dict; unknown keys raise PwmprError."""
        return options_from_dict(cls, options, cls.what)


@dataclass
class SetOptions(RiglOptions):
    """SET's knobs (``method="set"``): RigL's, with SET's constant zeta and updates until the end of training."""

    what: ClassVar[str] = "SET"

    decay: str = field(default="constant", metadata={"help": "How the drop fraction (SET's zeta) changes over the "
                                                     "updates: constant or cosine (to 0 at --end-fraction)."})
    end_fraction: float = field(default=1.0, metadata={"help": "No mask update after this fraction of the training "
                                                       "epochs, in (0, 1]."})


# -- layer densities --------------------------------------------------------------------------------------------
def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities for a network of density ``density`` (RigL's ``sparse_utils``).

    Layer ``l`` gets ``eps * sum(shape_l) / prod(shape_l)``; layers that would pass 1 are made dense.
    """
    if density >= 1:
        return {n: 1.0 for n in shapes}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        rhs = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        eps = rhs / sum(raw[n] * sizes[n] for n in rest)
        top = max(raw[n] for n in rest)
        if top * eps <= 1:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= {n for n in rest if raw[n] == top}


def layer_counts(sizes: dict[str, int], densities: dict[str, float], total: int) -> dict[str, int]:
    """Whole edge counts per layer that sum to ``total``: ``floor(density x size)`` each, and the edges left over
    one each to the layers with the largest remainders (ties: layer order), never more than a layer holds."""
    targets = {n: min(densities[n], 1.0) * sizes[n] for n in sizes}
    counts = {n: min(sizes[n], floor_count(t)) for n, t in targets.items()}
    left = total - sum(counts.values())
    order = sorted(sizes, key=lambda n: -(targets[n] - math.floor(targets[n] + 1e-9)))
    while left > 0 and any(counts[n] < sizes[n] for n in order):
        for n in order:
            if left > 0 and counts[n] < sizes[n]:
                counts[n] += 1
                left -= 1
    return counts


def random_masks(model: nn.Module, density: float, distribution: str, generator: torch.Generator) -> MaskSet:
    """A random mask per prunable weight at the ``erk`` or ``uniform`` layer densities, ``round(density x total)``
    edges in all, each layer's positions drawn uniformly without replacement."""
    params = dict(model.named_parameters())
    names = prunable(model)
    shapes = {n: tuple(params[n].shape) for n in names}
    sizes = {n: params[n].numel() for n in names}
    densities = erk_densities(shapes, density) if distribution == "erk" else {n: density for n in names}
    counts = layer_counts(sizes, densities, round_half_up(density * sum(sizes.values())))
    out = {}
    for n in names:
        flat = torch.zeros(sizes[n], dtype=torch.bool)
        flat[torch.randperm(sizes[n], generator=generator)[: counts[n]]] = True
        out[n] = flat.view(shapes[n]).to(params[n].device)
    return MaskSet(out)


def schedule_lr(schedule: str, base_lr: float, t: float, total: float) -> float:
    """The learning rate at epoch ``t`` of ``total`` under the trainer's ``schedule`` (cosine to 0, step x0.1 at
    50% and 75%, constant), as one schedule over the whole run."""
    return base_lr * schedule_factor(schedule, t / total if total > 0 else 0.0)


# -- the methods -------------------------------------------------------------------------------------------------
class DynamicSparse(Method):
    """Train a fixed-density random mask for ``final_epochs`` epochs, dropping and regrowing edges between phases."""

    name = "dynamic-sparse"
    options_cls: type[RiglOptions] = RiglOptions
    regrow_rule = "gradient"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.options = self.options_cls.from_options(dict(cfg.options))
        self.total = cfg.final_epochs
        if self.total < 1:
            raise PwmprError(f"{self.options.what} needs at least one training epoch, got {self.total}")
        u = self.options.update_epochs
        self.phases = [(start, min(start + u, self.total)) for start in range(0, self.total, u)]

    def initial_masks(self, model, input_shape):
        gen = torch.Generator().manual_seed(self.cfg.seed + 5)
        return random_masks(model, self.options.density, self.options.distribution, gen)

    def _span(self, phase: int) -> tuple[int, int]:
        return self.phases[min(phase, len(self.phases) - 1)]

    def phase_epochs(self, phase: int) -> int:
        start, end = self._span(phase)
        return end - start

    def phase_schedule(self, phase: int) -> str:
        return "constant"  # the run's schedule is followed phase by phase through phase_lr

    def phase_lr(self, phase: int) -> float | None:
        start, end = self._span(phase)
        return schedule_lr(self.cfg.train.final_schedule, self.cfg.train.base_lr, (start + end) / 2, self.total)

    def drop_fraction(self, t: float) -> float:
        """The drop fraction of an update after epoch ``t`` (0 from ``end_fraction x epochs`` on: no update)."""
        o = self.options
        horizon = o.end_fraction * self.total
        if t >= horizon - 1e-9:
            return 0.0
        return cosine_decay(o.drop_fraction, t, horizon) if o.decay == "cosine" else o.drop_fraction

    def update_epochs_list(self) -> list[int]:
        """The epochs after which the mask is updated (every phase end but the last, before the end of updates)."""
        return [end for _, end in self.phases[:-1] if self.drop_fraction(end) > 0]

    def after_phase(self, ctx: RunContext) -> Decision:
        phase = sum(1 for r in ctx.history if r.get("stage") == "phase") - 1
        _, t = self._span(phase)
        info: dict[str, Any] = {"epoch": t}
        if phase >= len(self.phases) - 1:
            return Decision(stop=True, reason="budget", info=info)
        f = self.drop_fraction(t)
        info["drop_fraction"] = f
        if f <= 0:
            return Decision(info=info)
        rule = GROWTH_RULES.get(self.regrow_rule)

        def before_drop(_pruned):  # RigL scores the gradient of the network as it is, before the drop
            return rule.scores(ctx.model, ctx.masks, ctx.input_shape, ctx.sample_batch)

        step = rewire(ctx.model, ctx.masks, lambda n: (floor_count(f * n), floor_count(f * n)), rule=self.regrow_rule,
                      generator=ctx.generator, scores=before_drop, scope="layer", fill=True)
        info.update(step.info())
        return Decision(masks=step.masks, added=step.added, reason="update", info=info)


@METHODS.register("rigl")
class RigL(DynamicSparse):
    """RigL: drop the smallest |w|, regrow the largest |dL/dw|, at a fixed density (Evci et al. 2020)."""

    name = "rigl"
    options_cls = RiglOptions
    regrow_rule = "gradient"


@METHODS.register("set")
class SET(DynamicSparse):
    """SET: drop the smallest |w|, regrow at random, at a fixed density (Mocanu et al. 2018)."""

    name = "set"
    options_cls = SetOptions
    regrow_rule = "random"

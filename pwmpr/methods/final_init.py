"""The weights final training starts from (``--final-init``; docs/method.md, "Final training").

``continue`` (as grown), ``reinit`` (initial weights under the grown mask), ``rewind`` (seed edges initial,
grown edges zero) or ``shrink-perturb`` (grown weights shrunk, initial weights added at a small scale). Every rule
keeps the mask; the optimizer restarts when the weights change. Initial weights are the model's draw scaled by the
run's ``--init-scale`` for the mask they start (``Fresh``): the seed's for ``rewind``, the grown one otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pwmpr.masks import MaskSet
from pwmpr.registry import Registry
from pwmpr.seed.scale import scaled_state

# fresh(masks) -> the model's initial weights (every tensor of its state dict) scaled by --init-scale for ``masks``.
Fresh = Callable[[MaskSet], dict[str, Tensor]]
# rule(model, fresh, seed, grown) -> the state to load before final training, or None to keep the current one.
#   model: the grown model, as growth left it.
#   fresh: the initial weights for a mask (above).
#   seed: the seed masks (the edges the run started with); grown: the discovered masks.
FinalInit = Callable[[torch.nn.Module, Fresh, MaskSet, MaskSet], "dict[str, Tensor] | None"]
FINAL_INITS: Registry[FinalInit] = Registry("final init")


def initial_for(model: torch.nn.Module, initial: dict[str, Tensor], init_scale: str) -> Fresh:
    """``Fresh`` for a run whose ``model`` drew ``initial`` (its state dict before any mask) and scales by
    ``init_scale``."""
    return lambda masks: scaled_state(model, initial, masks, init_scale)


@FINAL_INITS.register("continue")
def keep_trained(model: torch.nn.Module, fresh: Fresh, seed: MaskSet, grown: MaskSet) -> None:
    """Final training carries on from the weights growth left (nothing to load)."""
    return None


@FINAL_INITS.register("reinit")
def initial_weights(model: torch.nn.Module, fresh: Fresh, seed: MaskSet, grown: MaskSet) -> dict[str, Tensor]:
    """Every tensor back to its initial value (scaled for the grown mask); the grown mask then zeroes the absent
    edges."""
    return fresh(grown)


@FINAL_INITS.register("rewind")
def seed_weights(model: torch.nn.Module, fresh: Fresh, seed: MaskSet, grown: MaskSet) -> dict[str, Tensor]:
    """The values the run started from (the initial ones scaled for the seed), every edge the seed did not have at
    zero (grown edges start at zero)."""
    state = fresh(seed)
    for name, mask in seed.items():
        state[name].mul_(mask.to(state[name].device, state[name].dtype))
    return state


SHRINK = 0.4  # shrink-perturb: the grown weights' share
PERTURB = 0.1  # shrink-perturb: the initial weights' share (a draw from the initial distribution, scaled)


@FINAL_INITS.register("shrink-perturb")
def shrunk_weights(model: torch.nn.Module, fresh: Fresh, seed: MaskSet, grown: MaskSet) -> dict[str, Tensor]:
    """Every trainable parameter at SHRINK x its grown value + PERTURB x its initial value (scaled for the grown
    mask; Ash and Adams 2020); frozen parameters and buffers (normalisation statistics) as grown."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    initial = fresh(grown)
    for name, p in model.named_parameters(remove_duplicate=False):  # a tied weight under each of its names
        if not p.requires_grad:  # final training could not undo the shrink
            continue
        state[name] = SHRINK * state[name] + PERTURB * initial[name].to(state[name].device, state[name].dtype)
    return state


#: The starts that keep what growth trained (final training warms its learning rate up from them, --warmup-epochs);
#: the others begin from initial values, as a one-shot network's training does.
TRAINED_STARTS = frozenset({"continue", "shrink-perturb"})


def starts_trained(name: str) -> bool:
    """Whether final training under the rule ``name`` starts from weights growth trained."""
    return name in TRAINED_STARTS


def needs_start(name: str) -> bool:
    """Whether the rule ``name`` reads the run's start (initial weights and seed masks), which a run must then keep."""
    return FINAL_INITS.get(name) is not keep_trained

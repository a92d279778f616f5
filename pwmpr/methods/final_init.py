"""The weights final training starts from (``--final-init``; docs/method.md, "Final training").

``continue`` (as grown), ``reinit`` (initial weights under the grown mask), ``rewind`` (seed edges initial,
grown edges zero) or ``shrink-perturb`` (grown weights shrunk, initial weights added at a small scale). Every rule
keeps the mask; the optimizer restarts when the weights change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pwmpr.masks import MaskSet
from pwmpr.registry import Registry

# rule(model, initial state, seed masks) -> the state to load before final training, or None to keep the current one.
#   model: the grown model, as growth left it.
#   initial: the model's state_dict before the seed mask was applied (every weight at its initialisation).
#   seed: the seed masks (the edges the run started with).
FinalInit = Callable[[torch.nn.Module, dict[str, Tensor], MaskSet], "dict[str, Tensor] | None"]
FINAL_INITS: Registry[FinalInit] = Registry("final init")


@FINAL_INITS.register("continue")
def keep_trained(model: torch.nn.Module, initial: dict[str, Tensor], seed: MaskSet) -> None:
    """Final training carries on from the weights growth left (nothing to load)."""
    return None


@FINAL_INITS.register("reinit")
def initial_weights(model: torch.nn.Module, initial: dict[str, Tensor], seed: MaskSet) -> dict[str, Tensor]:
    """Every tensor back to its initial value; the grown mask then zeroes the absent edges."""
    return {k: v.clone() for k, v in initial.items()}


@FINAL_INITS.register("rewind")
def seed_weights(model: torch.nn.Module, initial: dict[str, Tensor], seed: MaskSet) -> dict[str, Tensor]:
    """The initial values with every edge the seed did not have at zero (grown edges start at zero)."""
    state = {k: v.clone() for k, v in initial.items()}
    for name, mask in seed.items():
        state[name].mul_(mask.to(state[name].device, state[name].dtype))
    return state


SHRINK = 0.4  # shrink-perturb: the grown weights' share
PERTURB = 0.1  # shrink-perturb: the initial weights' share (a draw from the initial distribution, scaled)


@FINAL_INITS.register("shrink-perturb")
def shrunk_weights(model: torch.nn.Module, initial: dict[str, Tensor], seed: MaskSet) -> dict[str, Tensor]:
    """Every trainable parameter at SHRINK x its grown value + PERTURB x its initial value (Ash and Adams 2020);
    frozen parameters and buffers (normalisation statistics) as grown."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, p in model.named_parameters(remove_duplicate=False):  # a tied weight under each of its names
        if not p.requires_grad:  # final training could not undo the shrink
            continue
        state[name] = SHRINK * state[name] + PERTURB * initial[name].to(state[name].device, state[name].dtype)
    return state


def needs_start(name: str) -> bool:
    """Whether the rule ``name`` reads the run's start (initial weights and seed masks), which a run must then keep."""
    return FINAL_INITS.get(name) is not keep_trained

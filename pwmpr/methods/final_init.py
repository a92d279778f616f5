"""The weights final training starts from (``--final-init``; docs/method.md, "Final training").

``continue`` (as grown), ``reinit`` (initial weights under the grown mask) or ``rewind`` (seed edges initial,
grown edges zero). Every rule keeps the mask; the optimizer restarts when the weights change.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from pwmpr.masks import MaskSet
from pwmpr.registry import Registry

# rule(initial state, seed masks) -> the state to load before final training, or None to keep the current one.
#   initial: the model's state_dict before the seed mask was applied (every weight at its initialisation).
#   seed: the seed masks (the edges the run started with).
FinalInit = Callable[[dict[str, Tensor], MaskSet], "dict[str, Tensor] | None"]
FINAL_INITS: Registry[FinalInit] = Registry("final init")


@FINAL_INITS.register("continue")
def keep_trained(initial: dict[str, Tensor], seed: MaskSet) -> None:
    """Final training carries on from the weights growth left (nothing to load)."""
    return None


@FINAL_INITS.register("reinit")
def initial_weights(initial: dict[str, Tensor], seed: MaskSet) -> dict[str, Tensor]:
    """Every tensor back to its initial value; the grown mask then zeroes the absent edges."""
    return {k: v.clone() for k, v in initial.items()}


@FINAL_INITS.register("rewind")
def seed_weights(initial: dict[str, Tensor], seed: MaskSet) -> dict[str, Tensor]:
    """The initial values with every edge the seed did not have at zero (grown edges start at zero)."""
    state = {k: v.clone() for k, v in initial.items()}
    for name, mask in seed.items():
        state[name].mul_(mask.to(state[name].device, state[name].dtype))
    return state


def needs_start(name: str) -> bool:
    """Whether the rule ``name`` reads the run's start (initial weights and seed masks), which a run must then keep."""
    return FINAL_INITS.get(name) is not keep_trained

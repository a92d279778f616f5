"""The weights final training starts from (``--final-init``; docs/method.md, "Final training").

A rule takes the network growth discovered and the run's start, and returns the state final training begins with
(None: keep the weights as they are). Every rule keeps the discovered mask; the optimizer's state starts afresh
whenever the weights change.

- ``continue``: the grown network's weights as they are (the paper's pipeline).
- ``reinit``: the model's initial weights (before the seed mask was applied) under the grown mask: the lottery-ticket
  question "is the mask the gain, or the training so far?" (Frankle and Carbin 2019).
- ``rewind``: the seed's edges at their initial values and the grown edges at zero, other tensors (biases, norms) at
  their initial values: the spec's ablation, the network as growth would have found it with no training at all.
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

"""The training cost of a run so far, relative to one dense run, in both conventions (docs/method.md, Cost).

(i) density-weighted training FLOPs: 3 x the forward FLOPs of the present weights per sample per epoch, summed over
the phases; (ii) epoch-equivalents: epochs trained, whatever the density. Both are divided by one dense run of
``reference_epochs`` epochs.
"""

from __future__ import annotations

from typing import Any

#: Training FLOPs per sample: forward, plus backward at about twice the forward.
TRAIN_FACTOR = 3.0
START = {"train_flops_total": 0.0, "epochs_total": 0}


def phase_cost(previous: dict[str, Any] | None, *, sparse_fwd: float, dense_fwd: float, n_train: int, epochs: int,
               reference_epochs: int) -> dict[str, float]:
    """The cost entries of a phase's history row: its training FLOPs and the run's totals and ratios so far.

    ``previous`` is the history row before it (None for the first phase); ``sparse_fwd`` and ``dense_fwd`` are the
    forward FLOPs per sample of the masked and of the dense network.
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

"""IMP: exact global-magnitude pruning counts, what each variant resets, stopping, and cost summed over levels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pwmpr import rundir
from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.methods import METHODS, RunContext
from pwmpr.methods.imp import ImpOptions, prune_count, prune_global_magnitude
from pwmpr.runner import PhaseLoop, _SnapshotHook
from pwmpr.train.hooks import Hook


def _two_layer(w1, w2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1), bias=False), nn.Linear(len(w2[0]), len(w2), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1, dtype=torch.float32))
        net[1].weight.copy_(torch.tensor(w2, dtype=torch.float32))
    return net


def test_prune_count_is_ceil_of_a_fifth_of_what_remains():
    assert [prune_count(n) for n in (1, 4, 5, 6, 10, 11, 100, 101)] == [1, 1, 1, 2, 2, 3, 20, 21]
    assert prune_count(10, 0.5) == 5


def test_pruning_is_global_by_magnitude_and_only_among_unpruned_weights():
    # 6 + 4 = 10 weights; layer 0 holds the small ones, so a per-layer rule would prune differently.
    net = _two_layer([[0.1, -0.2, 0.3], [0.4, -0.05, 0.6]], [[5.0, -0.01], [7.0, 8.0]])
    masks = MaskSet({"0.weight": torch.tensor([[1, 1, 1], [1, 1, 1]]), "1.weight": torch.tensor([[1, 0], [1, 1]])})
    # Remaining: 9 (the masked -0.01 does not compete). ceil(0.2 * 9) = 2: the |w| 0.05 and 0.1 go.
    new = prune_global_magnitude(net, masks, 0.2)
    assert new.n_nonzero() == 9 - 2
    assert new["0.weight"].tolist() == [[False, True, True], [True, False, True]]
    assert new["1.weight"].tolist() == [[True, False], [True, True]]
    # Level 2: 7 remain, ceil(1.4) = 2 more: 0.2 and 0.3.
    newer = prune_global_magnitude(net, new, 0.2)
    assert newer.n_nonzero() == 5
    assert newer["0.weight"].tolist() == [[False, False, False], [True, False, True]]


def test_ties_still_prune_exactly_the_count():
    net = _two_layer([[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0]])  # 6 equal magnitudes
    masks = MaskSet.dense(net)
    new = prune_global_magnitude(net, masks, 0.2)
    assert masks.n_nonzero() - new.n_nonzero() == math.ceil(0.2 * 6) == 2
    assert new["0.weight"].reshape(-1).tolist() == [False, False, True, True]  # position order breaks ties


@pytest.mark.parametrize("seed", [0, 1])
def test_every_level_prunes_exactly_a_fifth_of_the_remaining_weights(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 7))
    masks = MaskSet.dense(net)
    counts = [masks.n_nonzero()]
    for _ in range(8):
        kept_before = {n: m.clone() for n, m in masks.items()}
        masks = prune_global_magnitude(net, masks, 0.2)
        masks.apply(net)
        counts.append(masks.n_nonzero())
        # Pruned entries were kept before, and no kept entry is smaller than a pruned one.
        pruned = torch.cat([net.get_parameter(n).detach().abs().reshape(-1)[(kept_before[n] & ~masks[n]).reshape(-1)]
                            for n in masks])
        kept = torch.cat([net.get_parameter(n).detach().abs().reshape(-1)[masks[n].reshape(-1)] for n in masks])
        assert pruned.max() <= kept.min()
    for before, after in zip(counts, counts[1:], strict=False):
        assert before - after == math.ceil(0.2 * before)


def test_bad_options_are_refused():
    with pytest.raises(PwmprError, match="variant"):
        ImpOptions(variant="magic")
    with pytest.raises(PwmprError, match="unknown IMP option"):
        ImpOptions.from_options({"colour": 1})
    with pytest.raises(PwmprError, match="prune_fraction"):
        ImpOptions(prune_fraction=1.0)


# -- what each variant resets, through the runner -------------------------------------------------------------
def _cfg(tmp_path, variant, **opts) -> RunConfig:
    return RunConfig(method="imp", model="mlp", data="digits", seed=3, device="cpu", phase_epochs=2,
                      final_epochs=0, reference_epochs=2, tau_core=False, max_train=300,
                      train={"batch_size": 50, "lr": 0.05},
                      options={"variant": variant, "levels": 2, **opts})


class _Recorder(Hook):
    """Learning rate at the first step of each phase and steps per phase."""

    def __init__(self) -> None:
        self.first_lr: list[float] = []
        self.steps: list[int] = []

    def on_phase_start(self, trainer, *, stage, epochs, n_batches):
        self.steps.append(0)

    def after_optimizer_step(self, trainer, *, loss):
        if self.steps[-1] == 0:
            self.first_lr.append(trainer.optimizer.param_groups[0]["lr"])
        self.steps[-1] += 1


def _run_levels(tmp_path, variant, **opts):
    """Train level 0 and 1 by hand, keeping the weights just before the decision and just after it."""
    run = PhaseLoop(_cfg(tmp_path, variant, **opts), tmp_path / variant)
    run.start_fresh()
    rec = _Recorder()
    run.trainer.hooks.append(rec)
    train = run.bundle.loader("train", 50, run.device, train=True, generator=run.data_gen)
    val = run.bundle.loader("val", 1024, run.device)
    seen = {}
    original = run.method.after_phase

    def spy(ctx: RunContext):
        if "trained" not in seen:  # level 0 only
            seen["trained"] = {k: v.clone() for k, v in ctx.model.state_dict().items()}
            seen["snapshot"] = ctx.initial_state
        return original(ctx)

    run.method.after_phase = spy
    run._phase(train, val)
    after = {k: v.clone() for k, v in run.model.state_dict().items()}
    seen["masks"] = run.trainer.masks.clone()
    optimizer_state = dict(run.trainer.optimizer.state)
    run._phase(train, val)
    return run, seen, after, optimizer_state, rec, len(train)


def test_rewind_restarts_level_one_from_the_weights_at_the_rewind_step(tmp_path):
    run, seen, after, opt_state, rec, n_batches = _run_levels(tmp_path, "rewind", rewind_step=3)
    snap, masks = seen["snapshot"], seen["masks"]
    assert snap is not None and not torch.equal(snap["net.1.weight"], seen["trained"]["net.1.weight"])
    assert masks.n_nonzero() == 50200 - math.ceil(0.2 * 50200)
    for name, m in masks.items():
        assert torch.equal(after[name][m], snap[name][m])  # unmasked entries: exactly the snapshot at step 3
        assert torch.all(after[name][~m] == 0)
    for name in ("net.1.bias", "net.3.bias"):
        assert torch.equal(after[name], snap[name])  # the whole state is rewound, not just the masked weights
    assert opt_state == {}  # momentum dropped
    assert rec.first_lr == [0.05, 0.05] and rec.steps == [2 * n_batches, 2 * n_batches]  # schedule replayed
    assert run.history[0]["decision"] == "prune" and run.history[0]["n_pruned"] == math.ceil(0.2 * 50200)


def test_snapshot_hook_keeps_the_weights_after_the_given_step():
    class FakeTrainer:
        def __init__(self):
            self.model = nn.Linear(2, 1)
            self.global_step = 0

    class FakeRun:
        initial_state = None

    trainer, fake = FakeTrainer(), FakeRun()
    hook = _SnapshotHook(3, fake)
    for step in range(1, 6):
        with torch.no_grad():
            trainer.model.weight.fill_(float(step))
        trainer.global_step = step
        hook.after_optimizer_step(trainer, loss=None)
    assert torch.all(fake.initial_state["weight"] == 3.0)


def test_lr_rewind_keeps_trained_weights_and_replays_the_schedule(tmp_path):
    run, seen, after, opt_state, rec, n_batches = _run_levels(tmp_path, "lr-rewind")
    masks = seen["masks"]
    for name, m in masks.items():
        assert torch.equal(after[name][m], seen["trained"][name][m])  # weights kept where not pruned
    assert masks.n_nonzero() == 50200 - math.ceil(0.2 * 50200)
    assert opt_state == {}
    assert rec.first_lr == [0.05, 0.05] and rec.steps == [2 * n_batches, 2 * n_batches]


def test_continue_keeps_weights_and_momentum_and_fine_tunes_briefly(tmp_path):
    run, seen, after, opt_state, rec, n_batches = _run_levels(tmp_path, "continue", continue_fraction=0.5,
                                                              finetune_lr_scale=0.1)
    for name, m in seen["masks"].items():
        assert torch.equal(after[name][m], seen["trained"][name][m])
    assert opt_state  # momentum kept (zeroed only at the pruned entries)
    assert rec.first_lr == [0.05, pytest.approx(0.005)]
    assert rec.steps == [2 * n_batches, 1 * n_batches]  # ceil(0.5 * 2) = 1 epoch
    assert [r["epochs"] for r in run.history] == [2, 1]


def test_imp_stops_at_levels_or_target_density_and_costs_sum_over_levels(tmp_path):
    from pwmpr.run_folder import run_config

    cfg = _cfg(tmp_path, "continue", levels=5, target_density=0.6)
    summary = run_config(cfg, tmp_path / "imp")
    rows = rundir.read_history(tmp_path / "imp")
    # 1.0 -> 0.8 -> 0.64 -> 0.512 <= 0.6: stops after level 3 although 5 levels were allowed.
    assert [r["n_nonzero"] for r in rows] == [50200, 40160, 32128, 25702]
    assert summary["stop_reason"] == "target-density"
    assert all("test_acc" in r for r in rows) and rows[-1]["test_acc"] == summary["test_acc"]
    # docs/method.md, "Cost": costs are sums over levels of epochs x density-weighted FLOPs, relative to one 2-epoch
    # dense run (for an MLP the FLOPs ratio is the density exactly).
    epochs = [2, 1, 1, 1]
    assert [r["epochs"] for r in rows] == epochs
    flops = sum(e * r["n_nonzero"] / 50200 for e, r in zip(epochs, rows, strict=True)) / 2
    assert summary["cost_flops"] == pytest.approx(flops, rel=1e-12)
    assert summary["cost_epochs"] == pytest.approx(sum(epochs) / 2)
    assert [r["cost_flops"] for r in rows] == pytest.approx([1.0, 1.4, 1.72, 1.72 + 25702 / 50200 / 2], rel=1e-12)


def test_imp_is_registered():
    assert "imp" in METHODS and METHODS.get("imp").records_test

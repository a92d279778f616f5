"""PWMPR's prune-and-regrow (hybrid growth) and shrink stage: exact counts, hand-worked masks, no weight revived,
the shrink stage's tolerance and revert, and resume after SIGKILL in the middle of a shrink stage."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runfiles import history, without_timing
from safetensors.torch import load_file
from torch import nn

from pwmpr import rundir
from pwmpr.config import RunConfig, ShrinkConfig
from pwmpr.counting import round_half_up
from pwmpr.errors import PwmprError
from pwmpr.growth import growth_count
from pwmpr.masks import MaskSet
from pwmpr.methods import RunContext
from pwmpr.methods.grow import shrink_verdict
from pwmpr.methods.rewire import cosine_decay, drop_lowest, rewire
from pwmpr.run_folder import run_config
from pwmpr.runner import PhaseLoop
from pwmpr.stop import Observation
from pwmpr.train.hooks import Hook

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cfg(**kw) -> RunConfig:
    base = dict(model="mlp", data="digits", seed=1, device="cpu", phase_epochs=1, final_epochs=1, tau_core=False,
                max_train=400, train={"batch_size": 64}, growth={"seed_density": 0.1})
    for key in ("growth", "stop", "shrink"):
        if key in kw:
            kw[key] = {**base.get(key, {}), **kw[key]}
    return RunConfig(**{**base, **kw})


def _net(w1, w2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1), bias=False), nn.Linear(len(w2[0]), len(w2), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[1].weight.copy_(torch.tensor(w2))
    return net


# -- the step itself, by hand -------------------------------------------------------------------------------------
def test_drop_lowest_is_global_exact_and_breaks_ties_by_position():
    net = _net([[0.5, -0.1, 0.3]], [[0.1], [2.0]])
    masks = MaskSet({"0.weight": torch.tensor([[1, 1, 0]]), "1.weight": torch.tensor([[1], [1]])})
    # Present |w|: 0.5, 0.1 (layer 0), 0.1, 2.0 (layer 1); the two 0.1s go first, layer 0's before layer 1's.
    assert drop_lowest(net, masks, 1)["0.weight"].tolist() == [[True, False, False]]
    two = drop_lowest(net, masks, 2)
    assert two["0.weight"].tolist() == [[True, False, False]] and two["1.weight"].tolist() == [[False], [True]]
    assert drop_lowest(net, masks, 0).equal(masks)


def test_rewire_drops_by_magnitude_and_regrows_by_score_hand_worked():
    net = _net([[0.5, -0.1, 0.3, 0.0]], [[0.2, 0.0], [0.0, -0.05]])
    masks = MaskSet({"0.weight": torch.tensor([[1, 1, 1, 0]]), "1.weight": torch.tensor([[1, 0], [0, 1]])})
    scores = {"0.weight": torch.tensor([[0.0, 9.0, 1.0, 3.0]], dtype=torch.float64),
              "1.weight": torch.tensor([[5.0, 4.0], [0.5, 0.0]], dtype=torch.float64)}
    # 5 present edges. Drop 2 (|w| 0.05 at 1.weight[1,1], then 0.1 at 0.weight[0,1]); regrow 3 by top score among
    # the absent edges after the drop: 0.weight[0,1] (9, dropped and picked again), 1.weight[0,0] is present,
    # 1.weight[0,1] (4), 0.weight[0,3] (3). 1.weight[1,1] (score 0) is never picked.
    step = rewire(net, masks, lambda n: (2, 3), rule="pwmp-topk", generator=None, scores=lambda pruned: scores)
    assert step.masks["0.weight"].tolist() == [[True, True, True, True]]
    assert step.masks["1.weight"].tolist() == [[True, True], [False, False]]
    assert step.added["0.weight"].tolist() == [3] and step.added["1.weight"].tolist() == [1]
    assert (step.n_dropped, step.n_grown, step.n_removed, step.n_added) == (2, 3, 1, 2)
    assert step.masks.n_nonzero() == 5 - 2 + 3


def test_rewire_per_layer_keeps_every_layer_count():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    masks = MaskSet({"0.weight": torch.rand(10, 20) < 0.3, "2.weight": torch.rand(5, 10) < 0.5})
    before = masks.layer_nonzero()
    step = rewire(net, masks, lambda n: (math.floor(0.3 * n), math.floor(0.3 * n)), rule="random",
                  generator=torch.Generator().manual_seed(0), scores=lambda pruned: None, scope="layer")
    assert step.masks.layer_nonzero() == before
    assert step.n_dropped == sum(math.floor(0.3 * n) for n in before.values())


def test_zeta_decays_along_a_cosine_from_its_start():
    from pwmpr.methods.grow import GrowMethod

    method = GrowMethod(_cfg(growth={"zeta": 0.4, "zeta_start": 1, "zeta_steps": 4}))
    assert [method.zeta_at(s) for s in range(7)] == pytest.approx(
        [0.0, 0.4, 0.2 * (1 + math.cos(math.pi / 4)), 0.2, 0.2 * (1 + math.cos(3 * math.pi / 4)), 0.0, 0.0])
    constant = GrowMethod(_cfg(growth={"zeta": 0.3, "zeta_steps": 0}))
    assert [constant.zeta_at(s) for s in range(3)] == [0.3, 0.3, 0.3]
    assert cosine_decay(0.3, 0, 0) == 0.3


# -- through the runner -------------------------------------------------------------------------------------------
def test_prune_and_regrow_keeps_the_density_it_promises_exactly(tmp_path):
    cfg = _cfg(growth={"zeta": 0.3, "zeta_steps": 3, "gamma": 0.25}, stop={"max_phases": 4})
    run_config(cfg, tmp_path / "hybrid")
    rows = [r for r in history(tmp_path / "hybrid") if r["stage"] == "phase"]
    grown = [r for r in rows if r["decision"] == "grow"]
    assert len(grown) == 3
    for i, (row, nxt) in enumerate(zip(rows, rows[1:], strict=False)):
        n = row["n_nonzero"]
        zeta = 0.15 * (1 + math.cos(math.pi * i / 3))
        step = row["prune_regrow"]
        assert step["zeta"] == pytest.approx(zeta)
        assert step["n_dropped"] == round_half_up(zeta * n)  # exactly the fraction promised
        assert step["n_grown"] == step["n_dropped"] + growth_count(n, 0.25)
        assert nxt["n_nonzero"] == n + growth_count(n, 0.25)  # the density plain growth would give, exactly
        assert row["n_added"] - step["n_removed"] == growth_count(n, 0.25)


class _NotRevived(Hook):
    """After every optimizer step: the weights and momentum at ``positions`` are exactly zero."""

    def __init__(self, positions: dict[str, torch.Tensor]) -> None:
        self.positions = positions
        self.steps = 0

    def after_optimizer_step(self, trainer, *, loss):
        params = dict(trainer.model.named_parameters())
        for name, where in self.positions.items():
            p = params[name]
            assert torch.all(p.detach()[where] == 0)
            assert torch.all(trainer.optimizer.state[p]["momentum_buffer"][where] == 0)
        self.steps += 1


def test_no_removed_weight_is_revived_by_the_optimizer(tmp_path):
    cfg = _cfg(growth={"zeta": 0.5, "zeta_steps": 0}, stop={"max_phases": 3}, train={"batch_size": 64,
                                                                                     "weight_decay": 1e-3})
    run = PhaseLoop(cfg, tmp_path / "run")
    run.start_fresh()
    train = run.bundle.loader("train", 64, run.device, train=True, generator=run.data_gen)
    val = run.bundle.loader("val", 1024, run.device)
    before = run.trainer.masks.clone()
    run._phase(train, val)  # phase 0, then prune-and-regrow
    after = run.trainer.masks.clone()
    removed = {n: before[n] & ~after[n] for n in before}
    added = {n: after[n] & ~before[n] for n in before}
    assert sum(int(m.sum()) for m in removed.values()) == run.history[0]["prune_regrow"]["n_removed"] > 0
    params = dict(run.model.named_parameters())
    for name in before:
        p, state = params[name], run.trainer.optimizer.state[params[name]]
        for where in (removed[name], added[name]):  # removed and new weights: zero, and so is their momentum
            assert torch.all(p.detach()[where] == 0) and torch.all(state["momentum_buffer"][where] == 0)
    hook = _NotRevived(removed)
    run.trainer.hooks.append(hook)
    run._phase(train, val)  # phase 1 trains with momentum and weight decay; nothing removed comes back
    assert hook.steps > 0
    for name in before:
        assert torch.all(params[name].detach()[removed[name] & ~run.trainer.masks[name]] == 0)


def test_shrink_verdict_hand_worked():
    ref = Observation(0.5, 0.90, 400)  # se = sqrt(0.9 * 0.1 / 400) = 0.015
    z = 1.2815515655446004  # z_0.9
    near = shrink_verdict(ref, Observation(0.4, 0.87, 400), tol=0.01, alpha=0.1)
    se = math.sqrt(0.09 / 400 + 0.87 * 0.13 / 400)
    assert near["se"] == pytest.approx(se) and near["bound"] == pytest.approx(0.01 + z * se)
    assert near["loss"] == pytest.approx(0.03) and near["kept"]  # 0.03 < 0.0389
    far = shrink_verdict(ref, Observation(0.3, 0.85, 400), tol=0.01, alpha=0.1)
    assert far["loss"] == pytest.approx(0.05) and not far["kept"]  # 0.05 > 0.01 + z * 0.0233 = 0.0399
    # Without validation sizes there is no noise: the tolerance alone decides.
    assert shrink_verdict(Observation(1, 0.9), Observation(0.5, 0.885), tol=0.02, alpha=0.1)["kept"]
    assert not shrink_verdict(Observation(1, 0.9), Observation(0.5, 0.875), tol=0.02, alpha=0.1)["kept"]
    # The default alpha 0.5 (z = 0): the measured loss decides, whatever the noise; above 0.5 the data must show the
    # loss is within the tolerance.
    assert ShrinkConfig().alpha == 0.5
    assert shrink_verdict(ref, Observation(0.4, 0.8925, 400), tol=0.01, alpha=0.5)["kept"]  # lost 0.75 points
    lost = shrink_verdict(ref, Observation(0.4, 0.8875, 400), tol=0.01, alpha=0.5)  # lost 1.25 points
    assert lost["bound"] == pytest.approx(0.01) and not lost["kept"]
    assert shrink_verdict(ref, Observation(0.4, 0.8875, 400), tol=0.01, alpha=0.1)["kept"]  # the lenient level
    assert not shrink_verdict(ref, Observation(0.4, 0.8925, 400), tol=0.01, alpha=0.9)["kept"]  # 0.0075 > 0.01 - z se


def _shrink_ctx(cfg, model, masks, history):
    return RunContext(cfg, model, masks, (2,), history, torch.Generator().manual_seed(0))


def test_shrink_ends_when_per_layer_rounding_would_remove_no_edge():
    # Three layers of 2 edges each under --scope layer: the global count promises round(0.2 x 6) - round(0.05 x 6)
    # = 1 edge removed, but each layer drops round(0.4) = 0 and regrows round(0.1) = 0. A candidate would be the
    # accepted network again, retrained until --shrink-max-steps: the stage ends now, nothing left to remove.
    from pwmpr.methods.grow import GrowMethod

    cfg = _cfg(growth={"rule": "random", "scope": "layer"}, shrink={"enabled": True, "max_steps": 10})
    model = nn.Sequential(*(nn.Linear(2, 2, bias=False) for _ in range(3)))
    masks = MaskSet({f"{i}.weight": torch.tensor([[True, False], [False, True]]) for i in range(3)})
    knee = {"stage": "phase", "density": 0.5, "val_acc": 0.9, "val_n": 400}
    decision = GrowMethod(cfg)._growth_stops(_shrink_ctx(cfg, model, masks, [knee]), "max-phases", {})
    assert decision.stop and decision.reason == "shrink-nothing-left" and decision.masks is None
    assert decision.info["knee_density"] == decision.info["smallest_density"] == 0.5
    # Global scope removes the edge the count promises: a candidate is trained.
    glob = _cfg(growth={"rule": "random", "scope": "global"}, shrink={"enabled": True, "max_steps": 10})
    step = GrowMethod(glob)._growth_stops(_shrink_ctx(glob, model, masks, [knee]), "max-phases", {})
    assert step.reason == "shrink" and step.masks.n_nonzero() == 5


def test_shrink_revert_without_the_accepted_network_is_a_pwmpr_error():
    # A checkpoint without the method/accepted_* tensors (restore finds none) cannot go back: a PwmprError (the
    # CLI's one-line "error: ..." and exit 2), naming what is missing, not a RuntimeError traceback.
    from pwmpr.methods.grow import GrowMethod

    cfg = _cfg(shrink={"enabled": True, "tol": 0.0})
    method = GrowMethod(cfg)
    method.restore({}, [])
    history = [{"stage": "phase", "density": 0.5, "val_acc": 0.9, "val_n": 400, "growth_stop": "saturated",
                "decision": "shrink"},
               {"stage": "phase", "density": 0.4, "val_acc": 0.5, "val_n": 400}]
    masks = MaskSet({"0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(PwmprError, match=r"no network to go back to.*method/accepted_mask/\* and "
                                         r"method/accepted_state/\*"):
        method.after_phase(_shrink_ctx(cfg, nn.Sequential(nn.Linear(2, 2, bias=False)), masks, history))


def test_shrink_keeps_exact_counts_and_reports_both_ends(tmp_path):
    cfg = _cfg(stop={"max_phases": 2}, shrink={"enabled": True, "tol": 0.5, "max_steps": 2})
    summary = run_config(cfg, tmp_path / "shrink")
    rows = history(tmp_path / "shrink")
    assert [r["decision"] for r in rows] == ["grow", "shrink", "shrink", "shrink-max-steps", "done"]
    knee = rows[1]
    assert knee["growth_stop"] == "max-phases"
    for row, nxt in zip(rows[1:3], rows[2:4], strict=True):
        n = row["n_nonzero"]
        assert nxt["n_nonzero"] == n - round_half_up(0.2 * n) + round_half_up(0.05 * n)
    assert all(r["shrink"]["kept"] for r in rows[2:4])
    assert summary["knee_density"] == knee["density"] and summary["knee_val_acc"] == knee["val_acc"]
    assert summary["smallest_density"] == rows[3]["density"] == summary["discovered_density"]
    assert summary["growth_stop_reason"] == "max-phases" and summary["stop_reason"] == "shrink-max-steps"
    assert (summary["shrink_steps"], summary["shrink_kept"]) == (2, 2)
    assert rows[3]["knee_density"] == knee["density"] and rows[3]["smallest_density"] == rows[3]["density"]
    saved = json.loads((tmp_path / "shrink" / "summary.json").read_text())
    assert saved["smallest_density"] < saved["knee_density"]


SHRINK_FAILS = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2",
                "--batch-size", "64", "--seed-density", "0.1", "--max-train", "400", "--no-tau-core", "--shrink",
                "--shrink-fraction", "0.97", "--shrink-regrow", "0", "--shrink-tol", "0.01", "--keep-checkpoints", "0"]


def test_shrink_stops_on_its_tolerance_and_goes_back_to_the_last_network_that_kept_it(tmp_path):
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    run = tmp_path / "fails"
    result = CliRunner().invoke(app, ["grow", *SHRINK_FAILS, "-q", "--out", str(run)])
    assert result.exit_code == 0, result.output
    rows = history(run)
    # Growth stops at phase 1 (max-phases); 97% of its edges go; the candidate loses far more than the tolerance.
    assert [r["decision"] for r in rows] == ["grow", "shrink", "shrink-revert", "shrink-tol", "done"]
    knee, candidate, back = rows[1], rows[2], rows[3]
    assert not candidate["shrink"]["kept"] and candidate["shrink"]["loss"] > candidate["shrink"]["bound"]
    assert back["n_nonzero"] == knee["n_nonzero"] and back["layer_density"] == knee["layer_density"]
    # The revert loaded the knee's weights and masks, which the knee's checkpoint keeps for it.
    at_knee = load_file(rundir.checkpoint_path(run, 1))
    reverted = load_file(rundir.checkpoint_path(run, 2))
    for key, value in at_knee.items():
        if key.startswith("method/accepted_state/"):
            assert torch.equal(reverted["model/" + key.removeprefix("method/accepted_state/")], value)
        if key.startswith("method/accepted_mask/"):
            assert torch.equal(reverted["mask/" + key.removeprefix("method/accepted_mask/")], value)
    assert any(k.startswith("method/") for k in at_knee)
    final = load_file(run / "final.safetensors")
    assert all(torch.equal(final[k], at_knee["method/accepted_" + k]) for k in final if k.startswith("mask/"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["smallest_density"] == summary["knee_density"] == knee["density"]
    assert summary["stop_reason"] == "shrink-tol" and (summary["shrink_steps"], summary["shrink_kept"]) == (1, 0)


def test_sigkill_in_the_middle_of_a_shrink_stage_then_resume(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "killed"
    cmd = [sys.executable, "-m", "pwmpr", "grow", *SHRINK_FAILS, "-q"]
    subprocess.run([*cmd, "--out", str(whole)], env=ENV, cwd=tmp_path, check=True)
    # Killed while the checkpoint after the shrink candidate is half-written: the resume starts from the knee's
    # checkpoint, so the candidate is trained again and the network to go back to comes from that checkpoint.
    slow = {**ENV, "PWMPR_TEST_SLOW_WRITE": "30:phase-0002.safetensors"}
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=slow, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob(".phase-0002.safetensors.*.tmp")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in (run / "checkpoints").glob("phase-*")) == ["phase-0000.safetensors",
                                                                           "phase-0001.safetensors"]
    resumed = subprocess.run([sys.executable, "-m", "pwmpr", "grow", "--resume", str(run)], env=ENV, cwd=tmp_path,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(history(whole)) == without_timing(history(run))
    assert [r["decision"] for r in history(run)][-3:] == ["shrink-revert", "shrink-tol", "done"]
    a, b = load_file(whole / "final.safetensors"), load_file(run / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((whole / "summary.json").read_text())["smallest_density"] == \
        json.loads((run / "summary.json").read_text())["smallest_density"]


def test_growth_without_the_new_options_is_unchanged(tmp_path):
    # zeta 0 and no shrink: the plain grow step, no prune_regrow entry, no shrink entries in the summary.
    summary = run_config(_cfg(stop={"max_phases": 2}), tmp_path / "plain")
    rows = history(tmp_path / "plain")
    assert [r["decision"] for r in rows] == ["grow", "max-phases", "done"]
    assert "prune_regrow" not in rows[0] and rows[1]["n_nonzero"] == rows[0]["n_nonzero"] + rows[0]["n_added"]
    assert "knee_density" not in summary and Path(summary["run_dir"]).is_dir()

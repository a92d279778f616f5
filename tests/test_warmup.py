"""The learning-rate warm-up (--warmup-epochs): the ramp by hand, the trainer follows it, and PWMPR warms up exactly
where it restarts from trained weights (docs/method.md, "Rough training")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.compare.records import normalised_config
from pwmpr.config import RunConfig, TrainConfig
from pwmpr.data import TensorLoader, TensorSplit
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.train import Trainer, lr_at
from pwmpr.train.hooks import Hook

runner = CliRunner()


def test_lr_at_ramps_linearly_over_the_warmup_steps_then_follows_the_schedule():
    cosine = [lr_at("cosine", 0.1, s, 100) for s in range(100)]
    assert lr_at("cosine", 0.1, 0, 100, 10) == pytest.approx(0.1 * 1 / 10)  # cos(0) = 1: the ramp alone
    assert lr_at("cosine", 0.1, 4, 100, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.04)) * 5 / 10)
    assert lr_at("cosine", 0.1, 9, 100, 10) == pytest.approx(cosine[9])  # the last warm-up step is at full rate
    assert [lr_at("cosine", 0.1, s, 100, 10) for s in range(10, 100)] == cosine[10:]
    assert lr_at("constant", 0.2, 1, 10, 4) == pytest.approx(0.1)
    assert lr_at("constant", 0.2, 1, 10, 0) == 0.2  # no warm-up


class _LrLog(Hook):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def after_optimizer_step(self, trainer, *, loss):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def _trainer() -> tuple[Trainer, TensorLoader, _LrLog]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    loader = TensorLoader(TensorSplit(torch.randn(64, 6), torch.randint(0, 3, (64,))), 16, torch.device("cpu"),
                          shuffle=True, generator=torch.Generator().manual_seed(0))
    log = _LrLog()
    return Trainer(model, MaskSet.dense(model), TrainConfig(lr=0.1), torch.device("cpu"), hooks=[log]), loader, log


@pytest.mark.parametrize("warmup, steps", [(1.0, 4), (0.5, 2), (0.625, 3), (0.1, 0), (9.0, 8), (0.0, 0)])
def test_the_trainer_warms_up_over_the_epochs_it_is_given(warmup, steps):
    trainer, loader, log = _trainer()  # 4 batches an epoch, 2 epochs: 8 steps
    trainer.train(loader, 2, schedule="cosine", warmup_epochs=warmup)
    assert log.lrs == pytest.approx([lr_at("cosine", 0.1, s, 8, steps) for s in range(8)])
    if steps:
        assert log.lrs[0] == pytest.approx(0.1 / steps)  # starts low, not at the peak
    else:
        assert log.lrs[0] == pytest.approx(0.1)


def test_a_resumed_training_carries_on_along_the_same_ramp():
    trainer, loader, log = _trainer()  # 4 batches an epoch: epochs 1 and 2 of 3 are steps 4 to 11, warm-up 8 steps
    trainer.train(loader, 3, schedule="cosine", warmup_epochs=2.0, first_epoch=1)
    assert log.lrs == pytest.approx([lr_at("cosine", 0.1, s, 12, 8) for s in range(4, 12)])
    assert log.lrs[0] == pytest.approx(lr_at("cosine", 0.1, 4, 12) * 5 / 8)  # mid-ramp, not back at its start


def test_the_starts_that_warm_up_are_final_inits_pwmpr_knows():
    from pwmpr.methods.final_init import FINAL_INITS, TRAINED_STARTS

    assert TRAINED_STARTS.issubset(FINAL_INITS.names()) and "continue" in TRAINED_STARTS


def _warmups(monkeypatch, tmp_path: Path, *flags: str) -> list[tuple[str, float]]:
    """(stage, warm-up epochs) of every training call of one PWMPR run on digits with ``flags``."""
    calls: list[tuple[str, float]] = []
    train = Trainer.train

    def recording(self, loader, epochs, **kwargs):
        calls.append((kwargs.get("stage", "phase"), kwargs.get("warmup_epochs", 0.0)))
        return train(self, loader, epochs, **kwargs)

    monkeypatch.setattr(Trainer, "train", recording)
    out = tmp_path / "-".join(f.strip("-") for f in flags) if flags else tmp_path / "default"
    result = runner.invoke(app, ["grow", "--data", "digits", "--model", "mlp", "--batch-size", "64", "--no-tau-core",
                                 "-q", "--seed-density", "0.1", "--phase-epochs", "1", "--final-epochs", "1",
                                 "--stop", "none", "--plateau-tol", "0", "--max-phases", "3", *flags,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    given = float(flags[flags.index("--warmup-epochs") + 1]) if "--warmup-epochs" in flags else 0.0
    assert json.loads((out / "config.json").read_text())["train"]["warmup_epochs"] == given
    return calls


def test_pwmpr_warms_up_where_it_restarts_from_trained_weights_and_nowhere_else(monkeypatch, tmp_path):
    assert {w for _, w in _warmups(monkeypatch, tmp_path)} == {0.0}  # the default: no warm-up anywhere
    # The first phase starts from the initial weights (as a sweep's training does); every later phase, and a final
    # training that keeps the grown weights, starts from trained ones.
    assert _warmups(monkeypatch, tmp_path, "--warmup-epochs", "1") == [
        ("phase 0", 0.0), ("phase 1", 1.0), ("phase 2", 1.0), ("final", 1.0)]
    assert _warmups(monkeypatch, tmp_path, "--warmup-epochs", "1", "--final-init", "continue")[-1] == ("final", 1.0)
    for fresh in ("reinit", "rewind"):  # final training from initial values: a fresh start, no warm-up
        calls = _warmups(monkeypatch, tmp_path, "--warmup-epochs", "2.5", "--final-init", fresh)
        assert calls[-1] == ("final", 0.0) and calls[1] == ("phase 1", 2.5), fresh


def test_a_baseline_never_warms_up(monkeypatch, tmp_path):
    # pwmpr baseline has no such flag (a baseline trains with the schedule it is defined with) ...
    result = runner.invoke(app, ["baseline", "imp", "--data", "digits", "--warmup-epochs", "1"])
    assert result.exit_code == 2 and "warmup-epochs" in result.output
    # ... and a config that sets it anyway trains every method but PWMPR at the peak rate from the first step.
    from pwmpr.run_folder import run_config

    calls: list[float] = []
    train = Trainer.train
    monkeypatch.setattr(Trainer, "train", lambda self, loader, epochs, **kw: (
        calls.append(kw.get("warmup_epochs", 0.0)), train(self, loader, epochs, **kw))[1])
    for method, options in (("imp", {"levels": 2}), ("rigl", {}), ("oneshot", {})):
        cfg = RunConfig(method=method, data="digits", model="mlp", phase_epochs=1, final_epochs=1, tau_core=False,
                        seed=0, options=options, train=TrainConfig(warmup_epochs=1.0))
        calls.clear()
        run_config(cfg, tmp_path / method)
        assert calls and set(calls) == {0.0}, method


def test_a_config_written_before_the_warmup_resumes_without_one():
    old = RunConfig().to_dict()
    old["version"] = 7
    del old["train"]["warmup_epochs"]
    assert RunConfig.from_dict(old).train.warmup_epochs == 0.0
    assert RunConfig.from_dict({**old, "version": 3}).train.warmup_epochs == 0.0
    current = RunConfig(train=TrainConfig(warmup_epochs=1.5)).to_dict()
    assert current["version"] >= 8 and RunConfig.from_dict(current).train.warmup_epochs == 1.5
    assert RunConfig.from_dict({"train": {"warmup_epochs": 2.0}}).train.warmup_epochs == 2.0
    with pytest.raises(PwmprError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1.0)
    with pytest.raises(PwmprError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=math.inf)


def test_the_warmup_is_not_part_of_a_baselines_configuration():
    # Only PWMPR warms up: two IMP runs that differ in it alone train alike and are seeds of one configuration.
    one = RunConfig(method="imp").to_dict()
    other = RunConfig(method="imp", train=TrainConfig(warmup_epochs=1.0)).to_dict()
    assert normalised_config(one) == normalised_config(other)
    grown = RunConfig(train=TrainConfig(warmup_epochs=1.0)).to_dict()
    assert normalised_config(RunConfig().to_dict()) != normalised_config(grown)

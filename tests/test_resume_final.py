"""A run killed during final training resumes at the last epoch it checkpointed and ends bit-identical to an
uninterrupted run; checkpoints keep the CUDA generator; a sweep keeps one progress display across its points."""

from __future__ import annotations

import pytest
import torch
from runfiles import history, without_timing
from safetensors.torch import load_file
from typer.testing import CliRunner

from pwmpr import checkpoint, run_folder, rundir
from pwmpr.config import RunConfig, StopConfig, TrainConfig
from pwmpr.progress import Reporter


class _Epochs(Reporter):
    """Records the final training's epochs; with ``stop_after``, interrupts it (Ctrl-C) once that many are done."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stage = ""
        self.final_epochs: list[int] = []
        self.stop_after = stop_after

    def phase_start(self, phase, density, stage):
        self.stage = stage

    def epoch_done(self, *, epoch, loss):
        if self.stage == "final":
            self.final_epochs.append(epoch)
            if epoch + 1 == self.stop_after:
                raise KeyboardInterrupt


def test_a_run_killed_in_final_training_resumes_at_its_last_epoch_checkpoint(tmp_path):
    cfg = RunConfig(data="digits", model="mlp", device="cpu", phase_epochs=1, final_epochs=4, tau_core=False,
                     checkpoint_minutes=0.0, stop=StopConfig(max_phases=2), train=TrainConfig(batch_size=64))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_folder.run_config(cfg, whole, reporter=Reporter())
    with pytest.raises(KeyboardInterrupt):  # in final epoch 3, after the checkpoint of epoch 2
        run_folder.run_config(cfg, cut, reporter=_Epochs(stop_after=3))
    [*_, newest] = rundir.checkpoints(cut)
    _, meta = rundir.load_tensors(newest)
    assert (meta["stage"], meta["progress"]["epochs_done"]) == ("final", 2)
    resumed = _Epochs()
    run_folder.run_config(RunConfig(), cut, resume=True, reporter=resumed)
    assert resumed.final_epochs == [2, 3]  # only what the kill lost is trained again
    assert without_timing(history(whole)) == without_timing(history(cut))
    a, b = load_file(whole / "final.safetensors"), load_file(cut / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert len(rundir.checkpoints(cut)) == 2  # the newest and its fallback


def test_checkpoints_keep_the_cuda_generator_of_a_cuda_run(monkeypatch, tmp_path):
    state = torch.arange(16, dtype=torch.uint8)
    restored = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.update(state=s, device=device))
    gens = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert "cuda" not in checkpoint.rng_states(*gens, torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "phase-0000.safetensors"
    checkpoint.write(path, checkpoint.Checkpoint(
        model_state=model.state_dict(), masks={}, optimizer={}, rng=checkpoint.rng_states(*gens, "cuda:0"),
        next_phase=1, stage="phase", history=[]))
    back = checkpoint.read(path, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    checkpoint.set_rng_states(back.rng, *gens, torch.device("cuda", 0))
    assert torch.equal(restored["state"], state) and restored["device"] == torch.device("cuda", 0)


def test_a_sweep_keeps_one_progress_display_across_its_points(monkeypatch, tmp_path):
    from pwmpr import progress
    from pwmpr.cli.app import app

    events: list[str] = []

    class Recording(Reporter):
        def train_start(self, *, stage, epochs, n_batches):
            events.append("train")

        def close(self):
            events.append("close")

    monkeypatch.setattr(progress, "make_reporter", lambda quiet=False: Recording())
    result = CliRunner().invoke(app, ["sweep", "--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size",
                                      "64", "--densities", "0.1,1", "--seeds", "0", "-q", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert events == ["train", "train", "close"]  # closed once, after the last point


def test_resume_takes_a_lower_lr_and_records_it(tmp_path):
    from pwmpr.cli.app import app

    run = tmp_path / "run"
    args = ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1",
            "--max-phases", "2", "--no-tau-core", "-q", "--out", str(run)]
    assert CliRunner().invoke(app, args).exit_code == 0
    rundir.checkpoints(run)[-1].unlink()  # as if killed in final training
    (run / "summary.json").unlink()
    result = CliRunner().invoke(app, ["grow", "--resume", str(run), "--lr", "0.02", "-q"])
    assert result.exit_code == 0, result.output
    rows = history(run)
    assert rows[-1]["stage"] == "final" and rows[-1]["lr_change"] == {"from": 0.1, "to": 0.02}
    assert all("lr_change" not in r for r in rows[:-1])
    assert RunConfig.load(run).train.lr == 0.02  # a later --resume keeps it
    result = CliRunner().invoke(app, ["grow", "--resume", str(run), "--gamma", "0.5", "--lr", "0.01"])
    assert result.exit_code == 2 and "drop the other flags (--gamma)" in result.output

"""The run folder as a safe store: --force loses nothing, one writer per folder, files follow the umask, a full
disk is one line, resume survives a half-written checkpoint, leftovers of killed processes are cleaned.

``FAULTS`` lists what these tests show; ``docs/bad_inputs.py`` turns it into a table in ``docs/bad-inputs.md``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from runfiles import history, without_timing
from safetensors.torch import load_file
from typer.testing import CliRunner

from pwmpr.cli.app import app

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "3",
        "--batch-size", "64", "--seed-density", "0.1", "--no-tau-core"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class Fault:
    fault: str
    behaviour: str
    test: str


FAULTS = [
    Fault("`grow --force` over a finished run with a bad model, a missing npz or `--device cuda` without CUDA",
          "one-line error; every file of the old run is untouched", "test_force_validates_before_touching_the_old_run"),
    Fault("`grow --force` whose new run fails before its first checkpoint (loss NaN in phase 0)",
          "the old run's files come back; the message says no checkpoint of the new run exists",
          "test_force_restores_the_old_run_when_the_new_one_fails_early"),
    Fault("`grow --force` over a run that has an `export/` folder",
          "the old files (and export/) are moved aside and deleted only after the new run's first checkpoint",
          "test_force_replaces_the_run_and_drops_a_stale_export"),
    Fault("a second `pwmpr grow` on a folder another grow is writing",
          "one line `error: run folder ... is locked by pid N`, exit 2; the first run finishes untouched",
          "test_two_grows_on_one_folder"),
    Fault("a lock file left by a killed process", "taken over (the kernel dropped the lock)",
          "test_a_stale_lock_is_taken_over"),
    Fault("two exports to one `--out`", "the second: one line `... is locked by pid N`, exit 2",
          "test_export_to_a_locked_out"),
    Fault("umask 022", "run, checkpoint and export files are mode 0644 like any tool's output",
          "test_files_follow_the_umask"),
    Fault("a full disk (small tmpfs) during grow, export and compare",
          "one line `error: cannot write ...: No space left on device`, exit 2; no temporary file or staging folder "
          "left", "test_full_disk_is_one_line"),
    Fault("SIGKILL while a checkpoint is half-written", "`--resume` removes the partial file and ends with the same "
          "history and weights as an uninterrupted run", "test_sigkill_in_the_middle_of_a_checkpoint_then_resume"),
    Fault("a truncated newest checkpoint", "`--resume` falls back to the newest checkpoint that verifies, says so, "
          "renames the bad one `*.corrupt`, and prints the final result line",
          "test_resume_falls_back_to_a_good_checkpoint"),
    Fault("`.curve.png.*.tmp` and `.OUT.tmp-*/` left by killed processes",
          "removed by the next run or export on that path; `pwmpr inspect` shows none of them",
          "test_leftovers_of_dead_processes_are_cleaned"),
    Fault("Ctrl-C while curve.png is drawn", "the plot is finished, then exit 130 with the one-line interrupt note, "
          "no traceback", "test_ctrl_c_inside_the_plot_code"),
    Fault("loss NaN in phase 0", "one line that says no checkpoint was written (none is promised)",
          "test_nan_in_phase_0_promises_no_checkpoint"),
    Fault("`sweep --force` over a finished sweep whose new sweep fails before a point finishes (loss NaN), or "
          "names a missing model", "one-line error; every file of the old sweep is back, byte for byte",
          "test_sweep_force_restores_the_old_sweep_when_the_new_one_fails"),
    Fault("`grow --resume` of a finished run", "says the run is finished and does nothing: no file is rewritten",
          "test_resuming_a_finished_run_does_nothing"),
    Fault("an 80-column terminal", "the result line and the export table fit 80 columns",
          "test_output_fits_80_columns"),
]


def _grow(*args: str, env: dict | None = None):
    return runner.invoke(app, ["grow", *args], env=env)


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}






@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("safe") / "run"
    result = _grow(*TINY, "-q", "--out", str(run))
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def test_force_validates_before_touching_the_old_run(run_copy, tmp_path):
    before = _files(run_copy)
    bad = [["--model", "nonexistent"], ["--data", f"npz:{tmp_path / 'missing.npz'}"]]
    if not torch.cuda.is_available():
        bad.append(["--device", "cuda"])
    for args in bad:
        result = _grow(*TINY, "-q", *args, "--out", str(run_copy), "--force")
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert _files(run_copy) == before, args


def test_force_restores_the_old_run_when_the_new_one_fails_early(run_copy):
    before = _files(run_copy)
    result = _grow(*TINY, "-q", "--lr", "1e30", "--out", str(run_copy), "--force")
    assert result.exit_code == 2 and "loss became" in result.output
    assert "no checkpoint of this run was written" in result.output and "holds the previous run again" in \
        result.output
    assert _files(run_copy) == before


def test_force_replaces_the_run_and_drops_a_stale_export(run_copy):
    (run_copy / "export").mkdir()
    (run_copy / "export" / "model.onnx").write_bytes(b"old")
    result = _grow(*TINY, "-q", "--max-phases", "2", "--out", str(run_copy), "--force")
    assert result.exit_code == 0, result.output
    assert not (run_copy / "export").exists()
    assert sorted(p.name for p in run_copy.iterdir()) == ["checkpoints", "config.json", "curve.png",
                                                           "final.safetensors", "history.jsonl", "summary.json"]
    assert len(history(run_copy)) == 3  # the new run: 2 phases + final


def test_nan_in_phase_0_promises_no_checkpoint(tmp_path):
    result = _grow(*TINY, "-q", "--lr", "1e30", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "no checkpoint of this run was written" in result.output and "keeps" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_two_grows_on_one_folder(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pwmpr", "grow", *TINY, "-q", "--out", str(run)],
                             env={**ENV, "PWMPR_TEST_SLOW_WRITE": "0.5"}, cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while not (run / "config.json").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = _grow(*TINY, "-q", "--out", str(run), "--force")
        assert second.exit_code == 2, second.output
        assert second.output.strip() == (f"error: run folder {run} is locked by pid {first.pid}, which is writing it "
                                         f"({run / '.pwmpr.lock'}); wait for it to finish or stop it first")
        resumed = _grow("--resume", str(run), "-q")
        assert resumed.exit_code == 2 and f"locked by pid {first.pid}" in resumed.output
        assert first.wait(120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert len(history(run)) == 4 and (run / "summary.json").exists() and not (run / ".pwmpr.lock").exists()


@contextlib.contextmanager
def _held(path: Path):
    """Another live process holding the lock ``path`` (as a running pwmpr would)."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".pwmpr.lock").write_text(f"{dead.pid}\n")  # a killed pwmpr's lock: the file stays, the flock is gone
    result = _grow(*TINY, "-q", "--max-phases", "1", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert not (run / ".pwmpr.lock").exists()


def test_export_to_a_locked_out(finished, tmp_path):
    out = tmp_path / "exp"
    with _held(tmp_path / ".exp.lock") as pid:
        result = runner.invoke(app, ["export", str(finished), "--out", str(out), "--timing-runs", "1", "-q"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: export folder") and f"is locked by pid {pid}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with _held(run / ".pwmpr.lock") as pid:  # a grow --force or --resume is writing the run folder
        result = runner.invoke(app, ["export", str(run), "--out", str(out), "--timing-runs", "1", "-q"])
    assert result.exit_code == 2 and f"run folder {run} is locked by pid {pid}" in result.output


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run, out = tmp_path / "run", tmp_path / "exp"
        assert _grow(*TINY, "-q", "--max-phases", "1", "--out", str(run)).exit_code == 0
        assert runner.invoke(app, ["export", str(run), "--out", str(out), "--timing-runs", "1", "-q"]).exit_code == 0
    finally:
        os.umask(old)
    files = [p for p in [*run.rglob("*"), *out.rglob("*")] if p.is_file()]
    assert any(p.name == "final.safetensors" for p in files) and any(p.suffix == ".onnx" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


@pytest.mark.parametrize("source", ["proc", "probe folder"])
def test_the_umask_is_read_without_setting_it(tmp_path, monkeypatch, source):
    # Setting the umask to 0 to read it would let another thread create a file world-writable meanwhile.
    from pwmpr.export import pipeline
    from pwmpr.rundir import atomic

    old = os.umask(0o027)
    try:
        if source != "proc":
            monkeypatch.setattr(atomic, "PROC_STATUS", tmp_path / "no-proc-here")
        elif not atomic.PROC_STATUS.is_file():
            pytest.skip("no /proc/self/status here")

        def refuse(mask):
            raise AssertionError(f"os.umask({mask:o}) called")

        monkeypatch.setattr(os, "umask", refuse)
        assert atomic.umask() == 0o027
        staging, out = tmp_path / ".exp.tmp-1", tmp_path / "exp"  # the export publishes with the same reader
        staging.mkdir(mode=0o700)
        (staging / "model.onnx").write_bytes(b"x")
        (staging / "model.onnx").chmod(0o600)
        pipeline._publish(staging, out)
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert oct((out / "model.onnx").stat().st_mode & 0o777) == "0o640"
    assert oct(out.stat().st_mode & 0o777) == "0o750"


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs (to fill the disk) needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _no_space(result) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "No space left on device" in lines[0]


def test_full_disk_is_one_line(finished, tmp_path):
    with _tmpfs(tmp_path / "disk", "1000k") as disk:
        run = disk / "run"
        _no_space(_grow(*TINY, "-q", "--out", str(run)))  # a growth checkpoint is ~0.7 MB: the second does not fit
        assert not list(run.rglob("*.tmp")) and not (run / "summary.json").exists()
        assert (run / "checkpoints" / "phase-0000.safetensors").is_file()  # the last good one stays, resumable
    with _tmpfs(tmp_path / "disk2", "150k") as disk:
        out = disk / "exp"
        _no_space(runner.invoke(app, ["export", str(finished), "--out", str(out), "--timing-runs", "1", "-q"]))
        assert not out.exists() and not list(disk.glob(".exp.tmp-*")) and not list(disk.glob(".*.lock"))
    with _tmpfs(tmp_path / "disk3", "40k") as disk:
        _no_space(runner.invoke(app, ["compare", str(finished), "--out", str(disk / "cmp")]))
        assert not list(disk.rglob("*.tmp"))


def test_sigkill_in_the_middle_of_a_checkpoint_then_resume(tmp_path):
    run, whole = tmp_path / "killed", tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "pwmpr", "grow", *TINY, "-q", "--out", str(whole)], env=ENV, cwd=tmp_path,
                   check=True)
    proc = subprocess.Popen([sys.executable, "-m", "pwmpr", "grow", *TINY, "-q", "--out", str(run)],
                            env={**ENV, "PWMPR_TEST_SLOW_WRITE": "30:phase-0001.safetensors"}, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob(".phase-0001.safetensors.*.tmp")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.3)  # inside the pause: half of the checkpoint is on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = list((run / "checkpoints").glob(".*.tmp"))
    assert partial and (run / ".pwmpr.lock").exists()  # what SIGKILL leaves: a half-written file, a dead lock
    assert [p.name for p in (run / "checkpoints").glob("phase-*")] == ["phase-0000.safetensors"]
    resumed = subprocess.run([sys.executable, "-m", "pwmpr", "grow", "--resume", str(run)], env=ENV, cwd=tmp_path,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "discovered density" in resumed.stdout  # the same final line as a fresh run
    assert not list(run.rglob("*.tmp")) and not (run / ".pwmpr.lock").exists()
    assert without_timing(history(whole)) == without_timing(history(run))
    a, b = load_file(whole / "final.safetensors"), load_file(run / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_falls_back_to_a_good_checkpoint(run_copy, finished):
    cks = sorted((run_copy / "checkpoints").glob("phase-*.safetensors"))
    newest = cks[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    (run_copy / "summary.json").unlink()  # killed while writing its last checkpoint: the run never finished
    result = _grow("--resume", str(run_copy))
    assert result.exit_code == 0, result.output
    assert f"skipped unreadable checkpoint(s) {newest.name}" in result.output
    assert f"resuming from {cks[-2].name}, the newest that verifies" in result.output
    assert "discovered density" in result.output  # the final result line, as a fresh run prints it
    assert (newest.parent / (newest.name + ".corrupt")).exists() and newest.is_file()
    assert without_timing(history(run_copy)) == without_timing(history(finished))


def test_leftovers_of_dead_processes_are_cleaned(run_copy, tmp_path):
    (run_copy / ".curve.png.abc123.tmp").write_bytes(b"half a png")
    (run_copy / "checkpoints" / ".phase-0002.safetensors.x1.tmp").write_bytes(b"half")
    out = tmp_path / "exp"
    staging = tmp_path / ".exp.tmp-dead1"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"partial")
    shown = runner.invoke(app, ["inspect", str(run_copy)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and ".tmp" not in shown.output
    result = runner.invoke(app, ["export", str(run_copy), "--out", str(out), "--timing-runs", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert not staging.exists() and (out / "model.onnx").is_file()
    assert _grow("--resume", str(run_copy), "-q").exit_code == 0
    assert not list(run_copy.rglob("*.tmp"))


def test_ctrl_c_inside_the_plot_code(tmp_path, monkeypatch):
    import pwmpr.plot

    original = pwmpr.plot.plot_curve
    calls = []

    def interrupted(history, path, **kw):
        calls.append(path)
        os.kill(os.getpid(), signal.SIGINT)  # lands while the figure is being drawn
        return original(history, path, **kw)

    monkeypatch.setattr(pwmpr.plot, "plot_curve", interrupted)
    run = tmp_path / "run"
    result = _grow(*TINY, "-q", "--out", str(run))
    assert calls and result.exit_code == 130, result.output
    assert "interrupted" in result.output and "Traceback" not in result.output
    assert "Invalid bounding box" not in result.output
    assert (run / "curve.png").read_bytes()[:4] == b"\x89PNG" and not list(run.rglob("*.tmp"))


def test_output_fits_80_columns(finished, tmp_path, monkeypatch):
    from pwmpr.progress import result_line

    monkeypatch.chdir(tmp_path)  # short folder names: the lines must fit whatever pytest's temporary path is

    summary = {"discovered_density": 0.1234, "test_acc": 0.95, "cost_flops": 0.44, "cost_epochs": 3.33,
               "stop_reason": "plateau", "run_dir": "runs/pwmpr-mlp-mnist5k-s0-0123abcd"}
    assert all(len(line) <= 80 for line in result_line(summary, 80).splitlines())
    result = _grow(*TINY, "--max-phases", "1", "--out", "run", env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "discovered density" in result.output
    lines = result.output.splitlines()
    final = lines[next(i for i, line in enumerate(lines) if line.startswith("discovered density")):]
    assert len(final) >= 2 and all(len(line) <= 80 for line in final), final
    result = runner.invoke(app, ["export", str(finished), "--out", "exp", "--timing-runs", "1"],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "packed (model.onnx)" in result.output
    table = [line for line in result.output.splitlines() if not line.startswith("· ")]
    assert all(len(line) <= 80 for line in table), result.output


def test_compare_log_axes_have_readable_ticks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pwmpr.compare.report import plain_ticks

    for lo, hi in ((0.12, 0.45), (0.3, 4.0), (0.01, 1.0)):
        fig, ax = plt.subplots()
        ax.plot([lo, hi], [1, 2])
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        plain_ticks(ax)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                  if t.get_text() and lo <= t.get_position()[0] <= hi]
        plt.close(fig)
        assert len(labels) >= 2 and all("10^" not in x and "$" not in x for x in labels), (lo, hi, labels)


def test_packed_graph_has_no_unused_initializer():
    from pwmpr.export import packing

    for n in (64, 61):  # a whole number of mask bytes, and padding bits to drop
        weights = [np.random.default_rng(0).normal(size=(n,)).astype(np.float32) * (np.arange(n) % 3 == 0)]
        nodes, inits = packing.decode_group(0, ["w"], weights, 18)
        used = {i for node in nodes for i in node.input}
        assert {t.name for t in inits} <= used, {t.name for t in inits} - used


def test_sweep_force_restores_the_old_sweep_when_the_new_one_fails(tmp_path):
    out = tmp_path / "sweep"
    command = ["sweep", "--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "-q",
               "--densities", "1", "--out", str(out)]
    assert runner.invoke(app, command).exit_code == 0
    before = _files(out)
    for extra in (["--lr", "1e30"], ["--model", "nonexistent"]):
        result = runner.invoke(app, [*command, *extra, "--force"])
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert _files(out) == before, extra
        assert not list(out.glob(".replaced-*"))


def test_resuming_a_finished_run_does_nothing(run_copy):
    before = {name: (run_copy / name).stat().st_mtime_ns for name in _files(run_copy)}
    result = _grow("--resume", str(run_copy))
    assert result.exit_code == 0, result.output
    assert "is finished" in result.output and "nothing was done" in result.output
    assert {name: (run_copy / name).stat().st_mtime_ns for name in _files(run_copy)} == before

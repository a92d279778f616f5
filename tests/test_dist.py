"""torchrun (DDP, gloo on CPU): two ranks grow one network; rank 0 alone repairs, decides and writes, and every rank
learns of its failure; masks are checked after every decision; --device is honoured; rank 0 downloads first."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runfiles import history

from pwmpr import dist
from pwmpr.errors import PwmprError

TINY = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "3",
        "--device", "cpu"]

# Faults put into the torchrun workers by this sitecustomize (first on PYTHONPATH), picked by PWMPR_FAULT:
#   diverge:K    rank 1 flips one mask entry of the K-th (0-based) growth decision it receives;
#   slow-repair  rank 0 starts 3 s late into the run folder, so rank 1 would reach it first if it did not wait;
#   enospc       rank 0's disk is full when it writes a checkpoint (where no tmpfs can be mounted).
SITECUSTOMIZE = '''
import os

_FAULT, _RANK = os.environ.get("PWMPR_FAULT", ""), os.environ.get("RANK")
if _FAULT and _RANK is not None:
    import dataclasses, errno, time
    from pwmpr import dist, rundir

    if _FAULT.startswith("diverge:") and _RANK == "1":
        _calls, _real = [], dist.broadcast_decision

        def broadcast_decision(decide):
            decision = _real(decide)
            _calls.append(1)
            if len(_calls) - 1 == int(_FAULT.split(":")[1]) and decision.masks is not None:
                masks = decision.masks.clone()
                flat = masks[sorted(masks)[0]].view(-1)
                flat[0] = ~flat[0]
                decision = dataclasses.replace(decision, masks=masks)
            return decision

        dist.broadcast_decision = broadcast_decision
    if _FAULT == "slow-repair" and _RANK == "0":
        _listed, _list = [], rundir.checkpoints

        def checkpoints(run_dir):
            if not _listed:
                _listed.append(1)
                time.sleep(3)
            return _list(run_dir)

        rundir.checkpoints = checkpoints
    if _FAULT == "enospc" and _RANK == "0":
        _save = rundir.save_tensors

        def save_tensors(path, *args, **kwargs):
            if "phase-" in str(path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return _save(path, *args, **kwargs)

        rundir.save_tensors = save_tensors
'''


def _torchrun(tmp_path: Path, port: int, fault: str, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "PWMPR_FAULT": fault}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "pwmpr", "grow", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)


def test_two_ranks_check_masks_after_each_decision_and_resume_from_the_checkpoint_rank_0_chose(tmp_path):
    run = tmp_path / "run"
    # Rank 1's masks drift at the second growth decision: every rank stops right there, before its checkpoint.
    proc = _torchrun(tmp_path, 29617, "diverge:1", *TINY, "--out", str(run))
    assert proc.returncode != 0
    assert proc.stderr.count("error: masks differ across ranks after the decision of phase 1") == 2, proc.stderr
    assert "device cpu" in proc.stdout  # --device cpu is what trains under torchrun
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["phase-0000.safetensors"]
    rows = history(run)
    assert len(rows) == 1 and rows[0]["decision"] == "grow"
    assert rows[0]["tau_core"]["n_hidden"] > 0  # the tau-core ran on rank 0 under DDP
    # A newer checkpoint, truncated: rank 0 alone sets it aside (says so once), the other rank waits and reads the
    # checkpoint rank 0 chose. Rank 0 comes late, so a rank 1 that did not wait would get there first.
    good = (run / "checkpoints" / "phase-0000.safetensors").read_bytes()
    (run / "checkpoints" / "phase-0001.safetensors").write_bytes(good[: len(good) // 2])
    proc = _torchrun(tmp_path, 29618, "slow-repair", "--resume", str(run), "--lr", "0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skipped unreadable checkpoint(s) phase-0001.safetensors") == 1, proc.stdout
    assert proc.stdout.count("discovered density") == 1  # rank 0 alone prints
    assert (run / "checkpoints" / "phase-0001.safetensors.corrupt").is_file()
    rows = history(run)
    assert [r["stage"] for r in rows] == ["phase", "phase", "phase", "final"]
    assert rows[1]["lr_change"] == {"from": 0.1, "to": 0.05} and "lr_change" not in rows[2]
    assert all(r["tau_core"]["n_hidden"] > 0 for r in rows[:3])
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.05
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["device"], summary["world_size"]) == ("cpu", 2)


def test_two_ranks_grow_a_language_model(tmp_path, monkeypatch):
    """A causal transformer on byte windows under DDP: token batches are split across ranks, every position is a
    target, masks agree after every decision (checked by the run itself), and rank 0 writes one run folder."""
    from pydoc_data.topics import topics

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in sorted(topics)[:40]:
        (corpus / f"{name}.txt").write_text(topics[name])
    run = tmp_path / "run"
    # the model is the tests' own tiny GPT, imported by module name in each worker
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(Path(__file__).parent),
                                                                os.environ.get("PYTHONPATH", "")) if p))
    proc = _torchrun(tmp_path, 29621, "", "--data", f"text:{corpus}", "--model", "test_lm:tiny_gpt",
                     "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2", "--max-train", "48",
                     "--batch-size", "16", "--optimizer", "adamw", "--seed-density", "0.1", "--no-tau-core",
                     "--device", "cpu", "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = history(run)
    assert [r["stage"] for r in rows] == ["phase", "phase", "final"]
    assert rows[1]["density"] > rows[0]["density"]
    assert all(r["val_n"] % 128 == 0 and r["val_ppl"] > 1 for r in rows)  # every position of every window
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["device"], summary["world_size"]) == ("cpu", 2)


def test_two_ranks_train_a_model_whose_auxiliary_head_gets_no_gradient(tmp_path, monkeypatch):
    """A model returning a dict with an auxiliary head: pwmpr trains on its logits, so under DDP the head's
    parameters receive no gradient, which DDP must not wait for."""
    run = tmp_path / "run"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(Path(__file__).parent),
                                                                os.environ.get("PYTHONPATH", "")) if p))
    proc = _torchrun(tmp_path, 29622, "", *TINY, "--model", "test_outputs:AuxHead", "--trust-code", "--no-tau-core",
                     "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["stage"] for r in history(run)][-1] == "final"


@contextlib.contextmanager
def _small_disk(path: Path):
    """A 600 kB tmpfs at ``path`` (a checkpoint is about 0.5 MB: the second does not fit); None where none can be
    mounted."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(path)], capture_output=True)
    try:
        yield path if done.returncode == 0 else None
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", str(path)], check=False)


def test_a_failure_on_rank_0_between_phases_ends_every_rank_with_it(tmp_path):
    with _small_disk(tmp_path / "disk") as disk:  # rank 0 alone writes: its disk fills up, the others' never do
        run = (disk or tmp_path) / "run"
        proc = _torchrun(tmp_path, 29619, "" if disk else "enospc", *TINY, "--no-tau-core", "--out", str(run))
    assert proc.returncode != 0
    assert "error: cannot write" in proc.stderr and "No space left on device" in proc.stderr  # rank 0
    assert re.search(r"error: rank 0 failed while writing the checkpoint: .*No space left on device", proc.stderr), \
        proc.stderr  # rank 1, which was not writing: it ends with rank 0's error instead of waiting


# -- the rank discipline without a process group (rank 0 and rank 1 played in turn) ------------------------------
class _FakeGroup:
    """Stands in for a two-rank process group: rank 0's broadcast is kept and handed to rank 1."""

    def __init__(self, monkeypatch) -> None:
        self.rank = 0
        self.sent: list = []
        self.events: list = []
        monkeypatch.setattr(dist, "is_distributed", lambda: True)
        monkeypatch.setattr(dist, "is_primary", lambda: self.rank == 0)
        monkeypatch.setattr(dist.tdist, "broadcast_object_list", self.broadcast)

    def broadcast(self, box, src=0):
        self.events.append((self.rank, "sync"))
        if self.rank == 0:
            self.sent = list(box)
        else:
            box[:] = self.sent


def test_rank_0_downloads_the_data_set_before_the_other_ranks_read_it(monkeypatch, tmp_path):
    from pwmpr.data import torchvision_sets

    group = _FakeGroup(monkeypatch)
    broken = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            group.events.append((group.rank, "download" if download else "read"))
            if broken:
                raise RuntimeError("Dataset not found or corrupted.")
            self.data = torch.zeros(2, 28, 28, dtype=torch.uint8)
            self.targets = [0, 1]

    fake_tv = type("tv", (), {"datasets": type("datasets", (), {"MNIST": FakeMNIST})})
    monkeypatch.setattr(torchvision_sets, "import_torchvision", lambda: fake_tv)
    for group.rank in (0, 1):
        assert torchvision_sets.mnist(str(tmp_path)).n_train == 2
    assert group.events == [(0, "download"), (0, "download"), (0, "sync"), (1, "sync"), (1, "read"), (1, "read")]
    # Rank 0 cannot get it: every rank stops with its reason, and rank 1 never touches the folder.
    broken.append(1)
    group.events.clear()
    group.rank = 0
    with pytest.raises(PwmprError, match="cannot load MNIST"):
        torchvision_sets.mnist(str(tmp_path))
    group.rank = 1
    with pytest.raises(PwmprError, match="rank 0 failed while downloading MNIST: cannot load MNIST"):
        torchvision_sets.mnist(str(tmp_path))
    assert group.events == [(0, "download"), (0, "sync"), (1, "sync")]


def test_torchrun_honours_device_cpu_and_refuses_one_gpu_for_every_rank(monkeypatch):
    from pwmpr.runner import resolve_device

    def device(name: str) -> torch.device:  # what the runner does: resolve (CUDA checked there), then pick the GPU
        return dist.rank_device(resolve_device(name))

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert device("cpu") == torch.device("cpu") and not chosen
    assert device("auto") == torch.device("cuda", 1) == device("cuda")
    assert chosen == [1, 1]
    with pytest.raises(PwmprError, match="--device cuda:0 names one GPU for every rank"):
        device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device("auto") == torch.device("cpu")
    with pytest.raises(PwmprError, match="CUDA is not available"):
        device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "1")  # outside torchrun: the resolved device as it is, no GPU chosen
    assert device("cuda:0") == torch.device("cuda", 0) and device("cuda") == torch.device("cuda")
    assert chosen == [1, 1]


def test_only_rank_0_shows_progress(monkeypatch):
    from pwmpr import progress

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("RANK", "1")
    assert type(progress.make_reporter()) is progress.Reporter  # silent: no live display on rank 1
    monkeypatch.setenv("RANK", "0")
    reporter = progress.make_reporter()
    try:
        assert isinstance(reporter, progress.RichReporter)
    finally:
        reporter.close()

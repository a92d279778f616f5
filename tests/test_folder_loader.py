"""The image-folder loader: sharded by a DistributedSampler under torchrun, workers that don't change the batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pwmpr import dist
from pwmpr.data import folder as folder_mod
from pwmpr.data import load_data
from pwmpr.data.folder import PREFETCH, StreamLoader, default_workers, fit_workers, loader_budget
from pwmpr.errors import PwmprError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("val", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
                img.save(root / split / cls / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def _batches(loader, epochs=1):
    out = []
    for _ in range(epochs):
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_folder_loader_shards_the_epoch_over_ranks(folder, monkeypatch):
    bundle = load_data("tinyimagenet", str(folder), val_fraction=0.25)
    n = len(bundle.train)
    seen = []
    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(dist, "rank", lambda rank=rank: rank)
        loader = StreamLoader(bundle.train, 5, torch.device("cpu"), train=True,
                              generator=torch.Generator().manual_seed(1), workers=0)
        assert len(loader) == (n // 2) // 5  # each rank gets its half of the epoch
        seen.append(list(loader.sampler))
    idx = [[i for i, _ in s] for s in seen]
    assert not set(idx[0]) & set(idx[1]) and len(idx[0]) + len(idx[1]) == n


def test_batches_depend_on_the_generator_not_on_workers(folder):
    bundle = load_data("tinyimagenet", str(folder), val_fraction=0.25)

    def loader(workers):
        return StreamLoader(bundle.train, 6, torch.device("cpu"), train=True,
                            generator=torch.Generator().manual_seed(3), workers=workers)

    plain, two = _batches(loader(0), epochs=2), _batches(loader(2), epochs=2)
    for a, b in zip(plain, two, strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(plain[0][0][0], plain[1][0][0])  # set_epoch: a new order / augmentation each epoch


def test_loader_settings(folder):
    bundle = load_data("tinyimagenet", str(folder), val_fraction=0.25)
    loader = StreamLoader(bundle.train, 4, torch.device("cpu"), train=True, workers=2)
    assert loader.loader.persistent_workers and loader.loader.prefetch_factor == PREFETCH == 2
    assert not loader.loader.pin_memory  # pinned memory only for a CUDA device
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    assert 0 <= default_workers() <= 8
    bundle.workers = 0
    assert bundle.loader("val", 4, torch.device("cpu")).workers == 0


# --- host memory: one worker budget per rank, evaluation at the training batch, /dev/shm ------------------------
IMAGENET = (3, 224, 224)


def test_loader_budget_by_hand():
    # ImageNet at 224 px: 3 * 224 * 224 = 150,528 float32 = 602,112 bytes + an 8-byte label = 602,120 per sample.
    b = loader_budget(IMAGENET, 128, 8)
    assert b.batch_bytes == 128 * 602_120 == 77_071_360
    assert b.shm_bytes == 8 * 2 * 77_071_360 == 1_233_141_760  # 8 workers x 2 prefetched batches
    assert b.host_bytes == (16 + 2) * 77_071_360 == 1_387_284_480  # + the batch being pinned + the one in use
    assert loader_budget(IMAGENET, 128, 0) == folder_mod.LoaderBudget(77_071_360, 0, 77_071_360)
    # The old evaluation loaders: batch 1024, 4 prefetched batches per worker, each loader's own 8 workers.
    assert loader_budget(IMAGENET, 1024, 8, prefetch=4).shm_bytes == 32 * 1024 * 602_120 == 19_730_268_160
    tiny = loader_budget((3, 64, 64), 10, 3)  # 12,288 floats = 49,152 + 8 bytes a sample
    assert (tiny.batch_bytes, tiny.shm_bytes, tiny.host_bytes) == (491_600, 2_949_600, 3_932_800)


def test_only_training_keeps_its_workers_and_evaluation_runs_at_the_training_batch(folder):
    bundle = load_data("tinyimagenet", str(folder), val_fraction=0.25)
    train = StreamLoader(bundle.train, 4, torch.device("cpu"), train=True, workers=2)
    val = StreamLoader(bundle.val, 4, torch.device("cpu"), workers=2)
    assert train.loader.persistent_workers and not val.loader.persistent_workers
    assert train.loader.prefetch_factor == val.loader.prefetch_factor == PREFETCH
    assert bundle.eval_batch(32) == 32  # streamed: the training batch bounds evaluation's memory too
    assert load_data("digits").eval_batch(32) == 1024  # tensors already on the device


def test_the_runner_evaluates_streamed_data_at_the_training_batch(tmp_path, monkeypatch):
    import pwmpr
    from pwmpr import api

    seen = []
    stream = api._stream

    def recording(data, batch_size, device, *, train=False, **kw):
        seen.append((train, batch_size))
        return stream(data, batch_size, device, train=train, **kw)

    monkeypatch.setattr(api, "_stream", recording)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(240, 8, generator=g), torch.randint(0, 2, (240,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    pwmpr.grow_module(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)), data,
                      val=torch.utils.data.TensorDataset(x[:120], y[:120]), num_classes=2, out=tmp_path / "run",
                      quiet=True, phase_epochs=1, final_epochs=1, stop={"max_phases": 1}, device="cpu", workers=0,
                      tau_core=False, config={"train": {"batch_size": 16}})
    assert {b for t, b in seen} == {16} and any(not t for t, _ in seen)


def _fake_shm(monkeypatch, size):
    monkeypatch.setattr(folder_mod, "shm_size", lambda path=folder_mod.SHM_PATH: size)
    monkeypatch.setattr(folder_mod, "_WARNED", set())


def test_workers_fit_in_dev_shm_or_fall_back_saying_what_to_pass(monkeypatch, caplog):
    need = loader_budget(IMAGENET, 128, 4).shm_bytes  # 4 workers x 2 batches of 77 MB = 617 MB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    _fake_shm(monkeypatch, need)
    assert fit_workers(4, IMAGENET, 128) == 4  # fits exactly
    _fake_shm(monkeypatch, 64 * 2**20)  # Docker's default: less than one batch
    monkeypatch.setattr(folder_mod, "default_workers", lambda: 4)
    assert fit_workers(None, IMAGENET, 128) == 0  # the default falls back to loading in the main process
    assert "--shm-size 1g or --ipc=host" in caplog.text and "using 0 worker(s)" in caplog.text
    with pytest.raises(PwmprError, match=r"holds 64 MiB.*--shm-size 1g or --ipc=host, or lower --workers \(at most 0"):
        fit_workers(4, IMAGENET, 128)  # an explicit --workers is not changed behind the user's back
    _fake_shm(monkeypatch, 2 * loader_budget(IMAGENET, 128, 1).shm_bytes + 1)  # room for 2 workers' batches
    assert fit_workers(None, IMAGENET, 128) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this node share it: one worker each
    assert fit_workers(None, IMAGENET, 128) == 1
    _fake_shm(monkeypatch, None)  # no /dev/shm (not Linux): nothing to check
    assert fit_workers(4, IMAGENET, 128) == 4
    assert fit_workers(0, IMAGENET, 10**6) == 0


def test_a_bundle_loader_keeps_its_workers_within_dev_shm(folder, monkeypatch):
    bundle = load_data("tinyimagenet", str(folder), val_fraction=0.25)
    _fake_shm(monkeypatch, loader_budget((3, 64, 64), 4, 1).shm_bytes)  # one worker's batches fit
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(folder_mod, "default_workers", lambda: 3)
    assert bundle.loader("train", 4, torch.device("cpu"), train=True).workers == 1


def test_loading_in_the_main_process_leaves_the_global_rngs_as_they_were():
    import random

    seen = []

    class Draws(torch.utils.data.Dataset):  # a random transform: draws from the global RNGs, as torchvision's do
        def __len__(self):
            return 4

        def __getitem__(self, i):
            seen.append((float(torch.rand(())), random.random()))
            return torch.zeros(1), 0

    item = folder_mod._SeededDataset(Draws())
    torch.manual_seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), random.getstate())
    item[(1, 7)]
    item[(1, 7)]
    assert seen[0] == seen[1]  # the item's draws are seeded from (index, epoch seed)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]

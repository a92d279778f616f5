"""The image-folder loader: sharded by a DistributedSampler under torchrun, workers that don't change the batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pwmpr import dist
from pwmpr.data import load_data
from pwmpr.data.folder import StreamLoader, default_workers


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
    assert loader.loader.persistent_workers and loader.loader.prefetch_factor == 4
    assert not loader.loader.pin_memory  # pinned memory only for a CUDA device
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    assert 0 <= default_workers() <= 8
    bundle.workers = 0
    assert bundle.loader("val", 4, torch.device("cpu")).workers == 0

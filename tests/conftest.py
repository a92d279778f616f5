"""Shared pytest setup: the slow/gpu markers, a device switch, seeded generators, temporary run dirs."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow to run")
    skip_gpu = pytest.mark.skip(reason="gpu: CUDA is not available here")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def _test_threads() -> int:
    """At most 2 torch threads, shared by pytest-xdist's workers (``-n``) so that they do not oversubscribe the
    cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(torch.get_num_threads(), 2) // workers)


TEST_THREADS = _test_threads()


def pytest_configure(config):
    torch.set_num_threads(TEST_THREADS)  # before any fixture: module-scoped runs train with the tests' threads


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep tests deterministic and polite on 2-core CI machines; a test that changes the thread count is undone."""
    n = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def device() -> str:
    """The device tests run on: PWMPR_TEST_DEVICE (like timm's TORCH_DEVICE), default cpu."""
    return os.environ.get("PWMPR_TEST_DEVICE", "cpu")


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def figs():
    """A list to put matplotlib figures in; they are closed after the test."""
    import matplotlib.pyplot as plt

    made = []
    yield made
    for f in made:
        plt.close(f)


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """``importable(prefix, source)``: write ``source`` as a module the test alone can import (its name from
    ``prefix`` and the test's temporary folder) and return that name, for ``--model NAME:factory``."""
    import textwrap

    def write(prefix: str, source: str) -> str:
        name = f"{prefix}_{tmp_path.name.replace('-', '_')}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    return write

"""No waste that grows with the data set: tau-core syncs, scoring batch, test split, and no host-device copy or host
sync per training step (the ``meta`` device stands in for a GPU: every copy to or from it is counted)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pwmpr import MaskSet, tau_core
from pwmpr import runner as runner_mod
from pwmpr.config import RunConfig, TrainConfig
from pwmpr.data import TensorLoader, TensorSplit
from pwmpr.runner import PhaseLoop
from pwmpr.train import Trainer
from pwmpr.transfers import Copies, count_copies

_SYNCS = {"__float__", "__int__", "__bool__", "item", "tolist", "cpu"}


class _Count(TorchFunctionMode):
    """Counts host syncs (tensor -> Python value or CPU copy) and device moves of large tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.moved_rows: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        self.calls[name] += 1
        target = [a for a in (*args[1:], kwargs.get("device") if kwargs else None)
                  if isinstance(a, (str, torch.device))]
        if name == "to" and target and isinstance(args[0], torch.Tensor) and args[0].dim() > 0 and \
                torch.device(target[0]).type != args[0].device.type:
            self.moved_rows.append(args[0].shape[0])
        return func(*args, **(kwargs or {}))

    @property
    def syncs(self) -> int:
        return sum(self.calls[n] for n in _SYNCS)


def test_tau_core_syncs_once_per_chunk_not_three_times_per_unit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    masks = MaskSet.dense(net)
    with _Count() as count:
        core = tau_core(net, masks, (16,), tau=0.99)
    assert core.size >= 40  # many greedy steps...
    assert count.syncs <= 12, count.calls  # ...but a handful of host syncs (the old loop: 3 per step)


def _run(tmp_path, **kw) -> PhaseLoop:
    cfg = RunConfig(data="digits", model="mlp", phase_epochs=1, final_epochs=0, device="cpu", **kw)
    r = PhaseLoop(cfg, tmp_path)
    r.start_fresh()
    return r


def test_scoring_batch_moves_one_batch_not_the_training_split(tmp_path):
    r = _run(tmp_path, growth={"rule": "gradient"}, train={"batch_size": 32})
    r.device = torch.device("meta")  # stands in for the GPU: every copy to it is counted
    with _Count() as count:
        x, y = r._scoring_batch()
    assert x.shape[0] == y.shape[0] == 32
    assert x.device.type == "meta" and count.moved_rows == [32, 32], count.moved_rows  # x and y, nothing more
    r.device = torch.device("cpu")
    x1, _ = r._scoring_batch()
    x2, _ = r._scoring_batch()  # its own generator: the same batch for the same phase
    assert torch.equal(x1, x2)


def test_test_split_loader_is_built_once(tmp_path):
    r = _run(tmp_path)
    assert r._test() is r._test()


def test_history_row_reports_tau_core_time_against_training_time(tmp_path, monkeypatch):
    r = _run(tmp_path)
    r.execute()
    row = r.history[0]
    assert row["tau_core"]["seconds"] > 0 and row["tau_core"]["share_of_training"] > 0
    # By hand: a tau-core that takes 0.5 s next to 2 s of training is a quarter of it.
    clock = iter([10.0, 10.5])
    monkeypatch.setattr(runner_mod.time, "perf_counter", lambda: next(clock))
    entry = r._tau_core(r.trainer.masks, train_seconds=2.0)
    assert entry["seconds"] == 0.5 and entry["share_of_training"] == 0.25


def test_copies_between_host_and_device_are_counted_both_ways():
    meta = torch.device("meta")
    host = torch.ones(3)

    def moves():
        on = host.to(meta)  # 1 to the device
        torch.empty(3, device=meta).copy_(host)  # 2
        back = on.cpu()  # 1 to the host
        torch.empty(3).copy_(on)  # 2
        value = on.sum().item()  # 3: a read of one value is a sync
        flag = bool(on[0] > 0)  # 4
        on + on  # on the device: no copy
        return back, value, flag

    (back, value, flag), copies = count_copies(moves)
    assert copies == Copies(to_device=2, to_host=4)
    assert torch.equal(back, torch.zeros(3)) and value == 0 and flag is False  # meta holds no data: zeros


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_training_steps_copy_nothing_to_or_from_the_device(optimizer):
    """4 crop-flip steps per epoch: one copy to the device and one read back per epoch, none per step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    masks = MaskSet({"0.weight": torch.rand(4, 3, 3, 3) < 0.5, "3.weight": torch.rand(3, 256) < 0.5})
    split = TensorSplit(torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,)))
    meta = torch.device("meta")
    loader = TensorLoader(split, 16, meta, shuffle=True, augment="crop-flip", generator=torch.Generator())
    trainer = Trainer(net, masks, TrainConfig(optimizer=optimizer), meta)
    for epochs in (1, 2):
        stats, copies = count_copies(lambda e=epochs: trainer.train(loader, epochs=e), meta)
        assert stats.steps == 4 * epochs
        assert copies == Copies(to_device=epochs, to_host=epochs)

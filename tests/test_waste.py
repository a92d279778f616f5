"""No per-phase waste that grows with the data set (issue 12, part 4): tau-core syncs, scoring batch, test split."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pwmpr import MaskSet, tau_core
from pwmpr.config import GrowConfig
from pwmpr.runner import Run

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


def _run(tmp_path, **kw) -> Run:
    cfg = GrowConfig(data="digits", model="mlp", phase_epochs=1, final_epochs=0, device="cpu", **kw)
    r = Run(cfg, tmp_path)
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


def test_history_row_reports_tau_core_time_against_training_time(tmp_path):
    r = _run(tmp_path)
    r.run()
    row = r.history[0]
    assert row["tau_core"]["seconds"] > 0
    assert row["tau_core"]["share_of_training"] == row["tau_core"]["seconds"] / row["wall_time"]

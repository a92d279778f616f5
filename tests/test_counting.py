"""The one rounding of a fraction to a count and the one learning-rate schedule, against numbers worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pwmpr.counting import floor_count, round_half_up, schedule_factor
from pwmpr.errors import PwmprError
from pwmpr.growth import growth_count
from pwmpr.methods.dst import schedule_lr
from pwmpr.methods.rewire import cosine_decay
from pwmpr.seed import uniform_masks
from pwmpr.train.trainer import lr_at


def test_counts_round_halves_up_everywhere():
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 2.4999, 3.5000001)] == [1, 2, 3, 2, 4]
    assert growth_count(10, 0.25) == 3  # 2.5 -> 3 (Python's round gives 2)
    assert growth_count(18, 0.25) == 5  # 4.5 -> 5 (round gives 4)
    model = torch.nn.Sequential(torch.nn.Linear(5, 2, bias=False))  # 10 weights
    assert uniform_masks(model, 0.25, (5,)).n_nonzero() == 3  # the seed keeps 2.5 -> 3 weights as well
    assert floor_count(0.29 * 100) == 29 and floor_count(2.999) == 2


def test_schedule_factor_by_hand():
    assert schedule_factor("constant", 0.9) == 1.0
    assert [schedule_factor("cosine", f) for f in (0.0, 0.5, 1.0, 1.5)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert schedule_factor("cosine", 0.25) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert [schedule_factor("step", f) for f in (0.49, 0.5, 0.74, 0.75)] == pytest.approx([1, 0.1, 0.1, 0.01])
    with pytest.raises(PwmprError, match="unknown learning-rate schedule"):
        schedule_factor("linear", 0.5)


def test_the_trainer_the_dynamic_sparse_methods_and_rigl_decay_share_the_schedule():
    assert lr_at("cosine", 0.2, 25, 100) == schedule_lr("cosine", 0.2, 25, 100) == 0.2 * schedule_factor("cosine", 0.25)
    assert lr_at("step", 0.1, 60, 100) == schedule_lr("step", 0.1, 6, 10) == pytest.approx(0.01)
    assert cosine_decay(0.3, 2, 4) == pytest.approx(0.15) and cosine_decay(0.3, 5, 4) == 0.0
    assert cosine_decay(0.3, 7, 0) == 0.3  # no horizon: no decay

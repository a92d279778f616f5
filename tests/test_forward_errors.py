"""Truthful errors from the forward wrappers and a device audit of the scoring engine.

Only a true shape mismatch is the user's ``input_shape``; out of memory has its own message; device mix-ups,
cuDNN failures and other bugs keep their own exception and traceback. The ``meta`` device stands in for a GPU:
a tensor the engine creates on the CPU next to a model on another device fails there exactly as on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pwmpr import MaskSet, PwmprError, pwmp_scores, training_flops
from pwmpr.models import check_input_shape, forward_error
from pwmpr.surrogate import linear_surrogate


class _Raises(nn.Module):
    """A one-layer net whose forward raises ``exc`` (what a GPU would raise) after its Linear."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.exc = exc

    def forward(self, x):
        self.fc(x)
        raise self.exc


def test_shape_mismatch_is_the_input_shapes_fault():
    with pytest.raises(PwmprError, match=r"input_shape \(5,\) cannot be fed.*shapes cannot be multiplied"):
        check_input_shape(nn.Linear(4, 3), (5,))
    with pytest.raises(PwmprError, match=r"input_shape \(2, 8, 8\) cannot be fed.*channels"):
        training_flops(nn.Conv2d(3, 4, 3), None, (2, 8, 8))


@pytest.mark.parametrize("exc", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 80 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes"),
])
def test_out_of_memory_says_what_ran_out_and_what_to_try(exc):
    with pytest.raises(PwmprError, match=r"out of memory on cpu during a forward pass.*--batch-size.*--bf16") as info:
        check_input_shape(_Raises(exc), (4,))
    assert "cannot be fed" not in str(info.value)
    with pytest.raises(PwmprError, match="out of memory"):
        training_flops(_Raises(exc), None, (4,))


@pytest.mark.parametrize("message", [
    "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
    "CUDA error: an illegal memory access was encountered",
    "mat1 and mat2 must have the same dtype, but got Float and BFloat16",
    "something else went wrong in a forward",
])
def test_bugs_are_not_reported_as_input_shape(message):
    for call in (lambda m: check_input_shape(m, (4,)), lambda m: training_flops(m, None, (4,)),
                 lambda m: pwmp_scores(m, MaskSet.dense(m), (4,))):
        with pytest.raises(RuntimeError, match="^" + message[:20]) as info:
            call(_Raises(RuntimeError(message)))
        assert not isinstance(info.value, PwmprError)


def test_forward_error_classifies_messages():
    assert forward_error(RuntimeError("Output size is too small"), (1, 2, 2)) is not None
    assert forward_error(IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
                         (3,)) is not None
    assert forward_error(RuntimeError("Expected all tensors to be on the same device"), (3,)) is None
    assert forward_error(ValueError("my model does not like Tuesdays"), (3,)) is None


class _NoAffine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, affine=False)  # no weight: its scale is made by the engine
        self.gn = nn.GroupNorm(2, 4, affine=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.ln = nn.LayerNorm(4, elementwise_affine=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.ln(self.pool(self.gn(self.bn(self.conv(x)))).flatten(1)))


def test_norms_without_affine_weight_score_on_the_models_device():
    # `meta` plays the GPU: CPU ones divided by a meta running_var raise, as they would against a CUDA one.
    model = _NoAffine().to("meta")
    surrogate = linear_surrogate(model, None)
    assert {t.device.type for t in (*surrogate.parameters(), *surrogate.buffers())} == {"meta"}
    scores = pwmp_scores(model, MaskSet.dense(model), (2, 5, 5))
    assert {s.device.type for s in scores.values()} == {"meta"}
    assert all(s.dtype == torch.float64 for s in scores.values())


def test_norms_without_affine_weight_score_like_ones():
    torch.manual_seed(0)
    model = _NoAffine()
    ref = _NoAffine()
    ref.load_state_dict(model.state_dict())
    ref.bn = nn.BatchNorm2d(4)  # affine with weight 1 and the same (fresh) statistics: the same scale
    ref.gn = nn.GroupNorm(2, 4)
    ref.ln = nn.LayerNorm(4)
    got = pwmp_scores(model, MaskSet.dense(model), (2, 5, 5))
    want = pwmp_scores(ref, MaskSet.dense(ref), (2, 5, 5))
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=0)

"""``--augment``: what training sees of an image (the modes, the crop of tensor images on the device, and a
data set's own choice overridden)."""

from __future__ import annotations

import torch
from torch import Tensor

from pwmpr.data import DataBundle, TensorSplit
from pwmpr.errors import PwmprError

#: ``--augment``: what training sees of an image. ``auto`` is the data set's own choice (crop-flip for CIFAR, image
#: folders and torchvision:NAME, none for the rest); ``crop`` crops as crop-flip does and never mirrors (digits,
#: letters, signs).
AUGMENTS = ("auto", "crop-flip", "crop", "none")


def crop_pad(height: int, width: int) -> int:
    """Zero padding (pixels per side) that training crops of a (height, width) image are cut from: an eighth of
    its short side, at least 1 (CIFAR's 4 pixels at 32)."""
    return max(1, min(height, width) // 8)


def crop_flip(x: Tensor, offsets: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Random crops of ``x`` (b, c, h, w) at ``offsets`` (b, 2) in its zero-padded copy, flipped where ``flips``."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (b, h)
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (b, w)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    out = out.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def set_augment(bundle: DataBundle, augment: str) -> None:
    """Train ``bundle`` (held as tensors) with ``augment`` instead of its own choice (``auto`` keeps that); crops
    need images (N, C, H, W). A streamed bundle's loader builds its augmentation (``load_data`` hands the mode to
    the loaders that stream image folders), so only ``auto`` applies here."""
    check_augment(augment)
    if augment == "auto":
        return
    train = bundle.train
    if not isinstance(train, TensorSplit):
        raise PwmprError(f"--augment {augment}: data set {bundle.name!r} is streamed by its own loader, which "
                         "decides its augmentation; leave --augment at auto")
    if augment == bundle.augment:
        return
    if augment != "none" and (train.x.dim() != 4 or not train.x.is_floating_point()):
        what = "token ids" if not train.x.is_floating_point() else f"samples of shape {tuple(train.x.shape[1:])}"
        raise PwmprError(f"--augment {augment} crops images (channels, height, width), but data set "
                         f"{bundle.name!r} holds {what}: use --augment none or auto")
    bundle.augment = augment


def check_augment(augment: str) -> None:
    """PwmprError unless ``augment`` is one of ``AUGMENTS``."""
    if augment not in AUGMENTS:
        raise PwmprError(f"--augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")

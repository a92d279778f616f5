"""``folder:PATH``: the user's own images, one folder per class, at their own size, streamed as the image folders
of ``pwmpr.data.folder`` are.

``PATH/train/<class>/...`` with the first of ``PATH/test/``, ``val/``, ``valid/`` as the test split (none: a fixed
20% of ``train/`` held out), or, without ``train/``, ``PATH/<class>/...`` with a fixed 20% held out as the test
split; validation is carved from the training split as for every data set. Hidden folders are not classes. Images
that share one size are read at it (up to ``MAX_SIDE`` on the short side); images of mixed sizes are resized to
their median short side, at most ``MAX_SIDE``. ``--model auto`` picks a registered model for that size
(``own_model``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, SPLIT_SEED, DataBundle, data_path
from pwmpr.data.augment import crop_pad
from pwmpr.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    image_folder,
    imagenet_transforms,
    stream_loader,
    test_folder,
    training_transform,
    with_transform,
)
from pwmpr.errors import PwmprError
from pwmpr.probe import first_line

MAX_SIDE = 224  # folder:PATH: images of mixed sizes are resized to their median short side, at most this
SIZE_SAMPLE = 64  # folder:PATH: images whose sizes decide the input size
TEST_SHARE = 0.2  # folder:PATH without a test folder: the share held out as the test split
TEST_FOLDERS = ("test", "val", "valid")  # beside train/, the first of these that exists is the test split


def image_size(paths: Sequence[str]) -> tuple[tuple[int, int] | int, bool]:
    """``shared_size`` of the images ``paths`` (up to ``SIZE_SAMPLE`` of them, spread over the list, headers only)."""
    from PIL import Image

    sizes = []
    for path in spread(list(paths)):
        try:
            with Image.open(path) as img:
                sizes.append(img.size)  # (W, H)
        except OSError as exc:
            raise PwmprError(f"cannot read image {path}: {first_line(exc)}") from None
    return shared_size(sizes)


def spread(items: Sequence) -> list:
    """Up to ``SIZE_SAMPLE`` of ``items``, evenly spread from the first to the last: the ones whose sizes decide the
    input size (folders list their images class by class, so every class has its say)."""
    n = len(items)
    if n <= SIZE_SAMPLE:
        return list(items)
    return [items[round(i * (n - 1) / (SIZE_SAMPLE - 1))] for i in range(SIZE_SAMPLE)]


def shared_size(sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int] | int, bool]:
    """The input size for images of ``sizes`` (W, H): ``((H, W), True)`` when they all share it and its short side
    is at most ``MAX_SIDE``, else ``(side, False)``: their median short side, at most ``MAX_SIDE``, for resizing."""
    if len(set(sizes)) == 1 and min(sizes[0]) <= MAX_SIDE:
        w, h = sizes[0]
        return (h, w), True
    shorts = sorted(min(wh) for wh in sizes)
    return min(MAX_SIDE, shorts[len(shorts) // 2]), False


def held_out(n: int) -> tuple[list[int], list[int]]:
    """(kept, test) indices of ``n`` samples with a fixed ``TEST_SHARE`` held out as the test split (npz's seed)."""
    gen = torch.Generator().manual_seed(SPLIT_SEED + 1)
    perm = torch.randperm(n, generator=gen).tolist()
    n_test = max(1, round(TEST_SHARE * n))
    return perm[n_test:], perm[:n_test]


def own_model(size: tuple[int, int] | int) -> str:
    """The registered model ``--model auto`` stands for on images of ``size``: the small CNN below 32 px, the CIFAR
    ResNet-32 below 64, ResNet-18 from there."""
    side = size if isinstance(size, int) else min(size)
    return "cnn" if side < 32 else "resnet32" if side < 64 else "resnet18"


@DATASETS.register("folder")
def own_folder(data_dir: str | None = None, path: str = "", augment: str = "auto") -> DataBundle:
    """``folder:PATH``: the user's images, one folder per class, at their own size (module docstring)."""
    root = data_path(path, data_dir)
    if not path or not root.is_dir():
        raise PwmprError(f"image folder not found: {path or '(empty path)'}; use --data folder:PATH, a folder with "
                         "train/<class>/ (and test/<class>/, val/<class>/ or valid/<class>/), or <class>/ folders of "
                         "images")
    tv = import_torchvision()
    train_root = root / "train" if (root / "train").is_dir() else root
    found = image_folder(tv, train_root, None)
    if len(found.classes) < 2:
        raise PwmprError(f"{train_root} has {len(found.classes)} class folder; a classifier needs at least 2")
    size, fixed = image_size([p for p, _ in found.samples])
    train_tf, eval_tf = own_transforms(size, fixed, augment)
    train, train_eval = with_transform(found, train_tf), with_transform(found, eval_tf)  # one scan, two transforms
    shape = (3, *size) if fixed else (3, size, size)
    name = f"folder:{root}"
    test_root = next((root / d for d in TEST_FOLDERS if train_root != root and (root / d).is_dir()), None)
    if test_root is not None:
        test = test_folder(tv, test_root, train, eval_tf)
        return DataBundle(name, len(train.classes), shape, own_model(size), train, train_eval, test,
                          make_loader=stream_loader)
    keep, held = held_out(len(train))
    if len(keep) < 2:
        raise PwmprError(f"{train_root} holds {len(train)} images: too few to hold out a test split")
    Subset = torch.utils.data.Subset
    return DataBundle(name, len(train.classes), shape, own_model(size), Subset(train, keep),
                      Subset(train_eval, keep), Subset(train_eval, held), make_loader=stream_loader)


def own_transforms(size: int | tuple[int, int], fixed: bool, augment: str = "auto"):
    """(training, evaluation) transforms for ``folder:PATH``. Images that share one size (``fixed``, ``size`` their
    (H, W)) are cropped from a padding of an eighth of their short side (``crop_pad``) and flipped for training,
    and kept as they are for evaluation (any of another size centre-cropped or padded to it). Images of mixed sizes
    are resized to ``size`` on their short side first, then treated as ``imagenet_transforms`` treats Tiny ImageNet
    (up to 64 px) or ImageNet (above). ``augment`` (``pwmpr.data.AUGMENTS``): ``crop`` never flips, ``none``
    trains on the evaluation transform."""
    T = import_torchvision().transforms
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if fixed:  # an image of another size that the sample missed is padded or cropped to the shared one
        evaluation = T.Compose([T.CenterCrop(size), *norm])
        crop = [T.RandomCrop(size, padding=crop_pad(*size), pad_if_needed=True)]
        return training_transform(crop, norm, evaluation, augment), evaluation
    if size <= 64:
        evaluation = T.Compose([T.Resize(size), T.CenterCrop(size), *norm])
        return training_transform([T.Resize(size), T.RandomCrop(size, padding=4)], norm, evaluation, augment), \
            evaluation
    return imagenet_transforms(size, augment)

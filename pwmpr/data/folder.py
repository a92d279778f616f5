"""Image folders streamed through a DataLoader: Tiny ImageNet (64 px) and ImageNet (224 px).

``--data-dir`` must hold ``train/<class>/...`` and ``val/``; ``val`` is either ImageFolder-shaped
(``val/<class>/...``) or Tiny ImageNet's ``val/images`` + ``val/val_annotations.txt``. That ``val`` folder
is the test split; the validation split is carved from ``train``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, DataBundle
from pwmpr.errors import PwmprError

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _folder_bundle(name: str, data_dir: str | None, size: int, model: str) -> DataBundle:
    if not data_dir:
        raise PwmprError(f"data set {name!r} needs --data-dir pointing at a folder with train/ and val/")
    root = Path(data_dir)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise PwmprError(f"data directory {root} must contain train/ and val/ folders for {name!r}")
    tv = import_torchvision()
    T = tv.transforms
    norm = [T.ToTensor(), T.Normalize(_MEAN, _STD)]
    if size <= 64:
        train_tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), *norm])
        eval_tf = T.Compose([T.Resize(size), T.CenterCrop(size), *norm])
    else:
        train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
        eval_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), *norm])
    train = tv.datasets.ImageFolder(str(root / "train"), transform=train_tf)
    train_eval = tv.datasets.ImageFolder(str(root / "train"), transform=eval_tf)
    ann = root / "val" / "val_annotations.txt"
    if ann.exists():
        samples = []
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in train.class_to_idx:
                samples.append((str(root / "val" / "images" / parts[0]), train.class_to_idx[parts[1]]))
        test = tv.datasets.ImageFolder(str(root / "train"), transform=eval_tf)
        test.samples = test.imgs = samples
        test.targets = [s[1] for s in samples]
    else:
        test = tv.datasets.ImageFolder(str(root / "val"), transform=eval_tf)
    return DataBundle(name, len(train.classes), (3, size, size), model, train, train_eval, test,
                      make_loader=_folder_loader)


def _folder_loader(data, batch_size: int, device: torch.device, *, train: bool = False,
                   generator: torch.Generator | None = None):
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, shuffle=train, generator=generator, num_workers=4,
        pin_memory=device.type == "cuda", drop_last=train, persistent_workers=False,
    )

    class _OnDevice:
        def __len__(self):
            return len(loader)

        def __iter__(self):
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return _OnDevice()


@DATASETS.register("tinyimagenet")
def tinyimagenet(data_dir: str | None = None) -> DataBundle:
    """Tiny ImageNet (200 classes, 64x64) from an image folder."""
    return _folder_bundle("tinyimagenet", data_dir, 64, "resnet18")


@DATASETS.register("imagenet")
def imagenet(data_dir: str | None = None) -> DataBundle:
    """ImageNet (1000 classes, 224x224) from an image folder."""
    return _folder_bundle("imagenet", data_dir, 224, "resnet50")

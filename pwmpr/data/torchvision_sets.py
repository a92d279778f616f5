"""MNIST, CIFAR-10 and CIFAR-100 through torchvision, held as tensors on the training device.

Under torchrun rank 0 alone downloads into ``--data-dir``; the other ranks read the files once it is done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pwmpr import dist
from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, DataBundle, TensorSplit
from pwmpr.errors import PwmprError

_FILES = {
    "MNIST": "MNIST/raw/ (train-images-idx3-ubyte[.gz] and the other three MNIST files)",
    "CIFAR10": "cifar-10-batches-py/ (extracted from cifar-10-python.tar.gz)",
    "CIFAR100": "cifar-100-python/ (extracted from cifar-100-python.tar.gz)",
}
_STATS = {
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "MNIST": ((0.1307,), (0.3081,)),
}


def _load(cls_name: str, data_dir: str | None) -> tuple[object, object]:
    """The train and test sets; under torchrun rank 0 downloads them (if need be) before the others read them."""
    tv = import_torchvision()
    root = Path(data_dir or "data")
    cls = getattr(tv.datasets, cls_name)

    def fetch(download: bool) -> tuple[object, object]:
        try:
            return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
        except (RuntimeError, OSError) as exc:
            raise PwmprError(
                f"cannot load {cls_name} from {root} and cannot download it ({str(exc).splitlines()[0]}); "
                f"put {_FILES[cls_name]} under {root} (--data-dir)"
            ) from None

    first = dist.on_primary(lambda: fetch(True), f"downloading {cls_name}", share=False)
    return first if dist.is_primary() else fetch(False)


def _to_split(ds, cls_name: str) -> TensorSplit:
    data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    x = torch.as_tensor(data, dtype=torch.float32) / 255.0
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in _STATS[cls_name])
    return TensorSplit((x - mean) / std, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))


def _bundle(name: str, cls_name: str, data_dir: str | None, classes: int, model: str, augment: str) -> DataBundle:
    train, test = _load(cls_name, data_dir)
    tr, te = _to_split(train, cls_name), _to_split(test, cls_name)
    return DataBundle(name, classes, tuple(tr.x.shape[1:]), model, tr, None, te, augment=augment)


@DATASETS.register("mnist")
def mnist(data_dir: str | None = None) -> DataBundle:
    """Full MNIST (60k/10k) via torchvision."""
    return _bundle("mnist", "MNIST", data_dir, 10, "mlp", "none")


@DATASETS.register("cifar10")
def cifar10(data_dir: str | None = None) -> DataBundle:
    """CIFAR-10 via torchvision; random crop (pad 4) and flip, done on the device."""
    return _bundle("cifar10", "CIFAR10", data_dir, 10, "resnet32", "crop-flip")


@DATASETS.register("cifar100")
def cifar100(data_dir: str | None = None) -> DataBundle:
    """CIFAR-100 via torchvision; random crop (pad 4) and flip, done on the device."""
    return _bundle("cifar100", "CIFAR100", data_dir, 100, "resnet32", "crop-flip")

"""``torchvision:NAME``: any image-classification data set torchvision ships (FashionMNIST, KMNIST, SVHN, STL10,
GTSRB, Flowers102, EuroSAT, ...), by its class name, streamed as ``folder:PATH`` streams a user's folder.

Its splits come from its constructor: ``train=True/False``, or ``split=`` its default (the training split) and the
first of ``test``, ``val`` it accepts; a data set with neither holds out a fixed 20% as the test split. Downloads go
to ``--data-dir`` (``data/``) when the network allows; under torchrun rank 0 alone downloads. Images are read in RGB
at their own size, or resized as ``folder:PATH`` resizes images of mixed sizes (``pwmpr.data.own_folder``).
"""

from __future__ import annotations

import inspect
import numbers
from pathlib import Path

import torch

from pwmpr import dist
from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, DataBundle
from pwmpr.data.folder import stream_loader
from pwmpr.data.own_folder import held_out, own_model, own_transforms, shared_size, spread
from pwmpr.errors import PwmprError
from pwmpr.probe import first_line

TEST_SPLITS = ("test", "val")  # split= values tried, in this order, for the test split


class RGB:
    """Images as RGB (grayscale ones repeated), so that every data set has 3 channels as ``folder:PATH`` has; a
    class rather than a lambda, so that it pickles for loader workers."""

    def __call__(self, image):
        return image.convert("RGB")


class _Transformed(torch.utils.data.Dataset):
    """``dataset`` with ``transform`` applied to its images (torchvision data sets take one at construction only)."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), int(label)


def _class(name: str):
    """torchvision's data set class ``name`` (any spelling of case), or a PwmprError naming the ones it has."""
    tv = import_torchvision()
    names = {n.lower(): n for n in tv.datasets.__all__ if inspect.isclass(getattr(tv.datasets, n, None))}
    if not name or name.lower() not in names:
        shown = ", ".join(sorted(names.values())[:12])
        raise PwmprError(f"torchvision has no data set {name!r}; use --data torchvision:NAME with one of its classes "
                         f"({shown}, ...)")
    return getattr(tv.datasets, names[name.lower()])


def _open(cls, root: Path, download: bool, **split):
    """``cls(root, **split)`` (no root for a data set that reads no files), downloading if allowed and need be;
    None when ``split`` names a split it lacks."""
    kwargs = dict(split)
    params = inspect.signature(cls).parameters
    if "download" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["download"] = download
    if "root" in params:  # every data set that reads files (FakeData makes its images up)
        kwargs["root"] = str(root)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # torchvision's verify_str_arg: an unknown split value
        if "split" in split and "split" in str(exc):
            return None
        raise PwmprError(f"cannot load torchvision's {cls.__name__}: {first_line(exc)}") from None
    except (RuntimeError, OSError, TypeError) as exc:
        reason = first_line(exc).rstrip(":. ")
        raise PwmprError(f"cannot load torchvision's {cls.__name__} from {root} ({reason}); where the network is not "
                         f"reachable put its files under {root} (--data-dir) as torchvision lays them out") from None


def _splits(cls, root: Path, download: bool):
    """(training split, test split or None) of ``cls`` by its constructor's parameters (module docstring)."""
    params = inspect.signature(cls).parameters
    required = [p.name for p in params.values() if p.name != "root" and p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:  # EMNIST's split, say: a choice of classes, not of a train or test split
        raise PwmprError(f"torchvision's {cls.__name__} needs {', '.join(required)}, which --data cannot pass; "
                         f"build it yourself and grow on it with the Python API (pwmpr.grow_module)")
    if "train" in params:
        return _open(cls, root, download, train=True), _open(cls, root, download, train=False)
    if "split" in params:
        train = _open(cls, root, download)
        for name in TEST_SPLITS:
            test = _open(cls, root, download, split=name)
            if test is not None:
                return train, test
        return train, None
    return _open(cls, root, download), None


def _size(dataset) -> tuple[tuple[int, int] | int, bool]:
    """``pwmpr.data.own_folder.shared_size`` of a data set's images (up to ``SIZE_SAMPLE``, spread over it)."""
    sizes = []
    for i in spread(range(len(dataset))):
        image, label = dataset[i][:2]
        if not hasattr(image, "size") or not hasattr(image, "convert"):
            raise PwmprError(f"torchvision's {type(dataset).__name__} gives {type(image).__name__} samples, not "
                             "images: pwmpr reads image-classification data sets")
        if not isinstance(label, numbers.Integral) and not (isinstance(label, torch.Tensor) and label.numel() == 1):
            raise PwmprError(f"torchvision's {type(dataset).__name__} gives {type(label).__name__} targets, not class "
                             "numbers: pwmpr reads image-classification data sets")
        sizes.append(image.size)
    return shared_size(sizes)


def _labels(dataset) -> list[int]:
    """Every label of ``dataset``: from its label list where torchvision keeps one, else read sample by sample."""
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(dataset, attr, None)
        if labels is not None and len(labels) == len(dataset):
            return [int(label) for label in labels]
    for attr in ("samples", "_samples"):
        samples = getattr(dataset, attr, None)
        if isinstance(samples, list) and len(samples) == len(dataset):
            return [int(sample[1]) for sample in samples]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _classes(dataset, test) -> int:
    """The class count: the data set's ``classes`` list, else the largest label of either split + 1."""
    named = getattr(dataset, "classes", None)
    if isinstance(named, (list, tuple)) and len(named) >= 2:
        return len(named)
    labels = _labels(dataset) + (_labels(test) if test is not None else [])
    if min(labels) < 0 or len(set(labels)) < 2:
        raise PwmprError(f"torchvision's {type(dataset).__name__} has labels {min(labels)}..{max(labels)}: a "
                         "classifier needs class numbers 0..K-1 of at least 2 classes")
    return max(labels) + 1


@DATASETS.register("torchvision")
def torchvision_dataset(data_dir: str | None = None, path: str = "") -> DataBundle:
    """``torchvision:NAME``: torchvision's image-classification data set class NAME (module docstring)."""
    cls = _class(path)
    root = Path(data_dir or "data")
    opened = dist.on_primary(lambda: _splits(cls, root, True), f"downloading {cls.__name__}", share=False)
    train, test = opened if dist.is_primary() else _splits(cls, root, False)
    if len(train) < 3:
        raise PwmprError(f"torchvision's {cls.__name__} holds {len(train)} training sample(s): too few to train on")
    size, fixed = _size(train)
    train_tf, eval_tf = own_transforms(size, fixed)
    train_tf.transforms.insert(0, RGB())
    eval_tf.transforms.insert(0, RGB())
    shape = (3, *size) if fixed else (3, size, size)
    num_classes = _classes(train, test)
    name = f"torchvision:{cls.__name__}"
    if test is not None:
        return DataBundle(name, num_classes, shape, own_model(size), _Transformed(train, train_tf),
                          _Transformed(train, eval_tf), _Transformed(test, eval_tf), make_loader=stream_loader)
    keep, held = held_out(len(train))  # as folder:PATH holds out its test split
    Subset = torch.utils.data.Subset
    return DataBundle(name, num_classes, shape, own_model(size), Subset(_Transformed(train, train_tf), keep),
                      Subset(_Transformed(train, eval_tf), keep), Subset(_Transformed(train, eval_tf), held),
                      make_loader=stream_loader)

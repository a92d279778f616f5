"""``torchvision:NAME``: any image-classification data set torchvision ships (FashionMNIST, KMNIST, SVHN, STL10, GTSRB,
Flowers102, EuroSAT, ...), by its class name, streamed as ``folder:PATH`` streams a user's folder.

Arguments of its own are passed after the name, ``torchvision:EMNIST:split=letters`` (``KEY=VALUE`` pairs joined by
commas, a value holding no comma; true/false, none and numbers are read as such, except for a parameter that takes
text); pwmpr decides ``root``, ``train``, ``download`` and the transforms itself. Its splits come from its
constructor: ``train=True/False``, or ``split=`` (unless given) the first of ``train``, ``trainval`` (else its
default) and the first of ``test``, ``val``, ``valid`` it accepts whose samples have labels of classes the training
split has and are not the training samples themselves; a data set with neither, or with no such test split, holds out
a fixed 20% of its training split as the test split. It is read from the files under ``--data-dir`` (``data/``), and
downloaded there only where they are missing, the class can download and the network allows; under torchrun rank 0
alone downloads. Images are read in RGB at their own size, or resized as ``folder:PATH`` resizes images of mixed
sizes (``pwmpr.data.own_folder``).
"""

from __future__ import annotations

import inspect
import logging
import numbers
import re
from pathlib import Path

import torch

from pwmpr import dist
from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, DataBundle
from pwmpr.data.folder import stream_loader
from pwmpr.data.own_folder import TEST_SHARE, held_out, own_model, own_transforms, shared_size, spread
from pwmpr.data.torchvision_args import arguments, downloads, parameters
from pwmpr.errors import PwmprError
from pwmpr.probe import first_line

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "trainval")  # split= values tried, in this order, for the training split
TEST_SPLITS = ("test", "val", "valid")  # split= values tried, in this order, for the test split


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
        sample = self.dataset[index]
        return self.transform(sample[0]), int(sample[1])


#: A few of torchvision's image-classification data sets, named in the error for an unknown one.
EXAMPLES = "FashionMNIST, KMNIST, USPS, SVHN, STL10, GTSRB, Flowers102, EuroSAT, DTD, Food101"
#: torchvision's base classes, which hold no data set of their own.
BASES = ("VisionDataset", "DatasetFolder")


def _class(name: str):
    """torchvision's data set class ``name`` (any spelling of case), or a PwmprError naming some it has."""
    tv = import_torchvision()
    names = {n.lower(): n for n in tv.datasets.__all__ if n not in BASES
             and inspect.isclass(getattr(tv.datasets, n, None))}
    if not name or name.lower() not in names:
        raise PwmprError(f"torchvision has no data set {name!r}; use --data torchvision:NAME with the class name of "
                         f"one of its image-classification data sets, such as {EXAMPLES}")
    return getattr(tv.datasets, names[name.lower()])


def _reason(exc: BaseException) -> str:
    """``exc``'s first line without torchvision's advice to pass download=True, which --data users cannot act on."""
    return re.sub(r"\.?\s*You can use download=True.*$", "", first_line(exc)).rstrip(":. ")


def _open(cls, root: Path, download: bool, given: dict, **split):
    """``cls(root, **given, **split)`` (no root for a data set that reads no files) from the files already there,
    else, where ``download`` and the class take a download flag, downloading them; None when ``split`` names a split
    it lacks."""
    params = inspect.signature(cls).parameters
    kwargs = {**given, **split, **({"root": str(root)} if "root" in params else {})}  # FakeData makes images up
    try:
        return cls(**kwargs)
    except ValueError as exc:  # torchvision's verify_str_arg: an unknown split value
        if "split" in split and "split" in str(exc):
            return None
        raise PwmprError(f"cannot load torchvision's {cls.__name__}: {_reason(exc)}") from None
    except ImportError as exc:
        raise PwmprError(f"torchvision's {cls.__name__} needs a package that is not installed: {_reason(exc)}") \
            from None
    except (RuntimeError, OSError) as exc:
        missing = _reason(exc)
        if "install" in missing.lower():  # StanfordCars' scipy, PCAM's h5py
            raise PwmprError(f"torchvision's {cls.__name__} needs a package that is not installed: {missing}") \
                from None
        if not (download and downloads(cls)):
            raise PwmprError(f"cannot load torchvision's {cls.__name__} from {root} ({missing}); put its files under "
                             f"{root} (--data-dir) as torchvision lays them out") from None
    except Exception as exc:  # a data set's own code: whatever it raises is one line, never a traceback
        raise PwmprError(f"cannot load torchvision's {cls.__name__}: {type(exc).__name__}: {_reason(exc)}") \
            from None
    try:
        return cls(**kwargs, download=True)
    except Exception as exc:
        raise PwmprError(f"cannot load torchvision's {cls.__name__} from {root} ({missing}) nor download it "
                         f"({_reason(exc)}); where the network is not reachable put its files under {root} "
                         f"(--data-dir) as torchvision lays them out") from None


def _splits(cls, root: Path, download: bool, given: dict):
    """(training split, test split or None) of ``cls`` by its constructor's parameters (module docstring), with
    the arguments ``given`` (``torchvision:NAME:KEY=VALUE``); a ``split`` given there is the user's, not chosen."""
    params = parameters(cls)
    required = [n for n, p in params.items() if n != "root" and n not in given
                and p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:  # EMNIST's split, say: a choice of classes, not of a train or test split
        raise PwmprError(f"torchvision's {cls.__name__} needs {', '.join(required)}: pass "
                         f"{'it' if len(required) == 1 else 'them'} as --data torchvision:{cls.__name__}:"
                         + ",".join(f"{n}=VALUE" for n in required))
    if "train" in params:
        train = _open(cls, root, download, given, train=True)
        return train, _test_split(cls, train, [("its test split",
                                                lambda: _open(cls, root, download, given, train=False))])
    if "split" not in params or "split" in given:
        return _open(cls, root, download, given), None
    train = next((d for d in (_open(cls, root, download, given, split=n) for n in TRAIN_SPLITS) if d is not None),
                 None)
    default = params["split"].default
    if train is None and isinstance(default, str) and default not in TEST_SPLITS:  # Places365's train-standard
        train = _open(cls, root, download, given, split=default)
    if train is None:
        raise PwmprError(f"torchvision's {cls.__name__} has no split named {' or '.join(TRAIN_SPLITS)} to train "
                         f"on; build it yourself and grow on it with the Python API (pwmpr.grow_module)")
    tries = [(f"its split {n!r}", lambda n=n: _open(cls, root, download, given, split=n)) for n in TEST_SPLITS]
    return train, _test_split(cls, train, tries)


def _test_split(cls, train, tries):
    """The first of ``tries`` ((what, opener) pairs) that opens a test split with samples, labels, and no class the
    training split lacks; None (a held-out fifth instead) when none does, saying why for each that opened."""
    train_classes: set[int] | None = None  # read once, when a test split first needs it
    for what, opener in tries:
        try:
            test = opener()
        except PwmprError as exc:  # FER2013 with its training file alone, say
            log.warning("torchvision's %s: %s could not be read (%s)", cls.__name__, what, exc)
            continue
        if test is None:
            continue
        if _length(test) == 0:
            why = "is empty"
        elif not _labelled(test):
            why = "has no labels"
        elif _same_samples(train, test):  # QMNIST's given `what` overrides its train flag
            why = "is the training split itself"
        elif not set(_labels(test)) <= (train_classes := train_classes or set(_labels(train))):
            why = "holds classes its training split lacks"  # LFWPeople's test people are not its training people
        else:
            return test
        log.warning("torchvision's %s: %s %s, so it is not the test split", cls.__name__, what, why)
    if tries:
        log.warning("torchvision's %s: a fixed %d%% of its training split is held out as the test split",
                    cls.__name__, round(100 * TEST_SHARE))
    return None


def _same_samples(a, b) -> bool:
    """Whether data sets ``a`` and ``b`` hold the same samples: as many, and equal images and labels at up to
    ``SIZE_SAMPLE`` indices spread over them."""
    import numpy as np

    if len(a) != len(b):
        return False
    for i in spread(range(len(a))):
        (xa, ya), (xb, yb) = _read(a, i)[:2], _read(b, i)[:2]
        if ya != yb or not np.array_equal(np.asarray(xa), np.asarray(xb)):
            return False
    return True


def _read(dataset, index: int):
    """Sample ``index`` of ``dataset``, or a PwmprError with what reading it raised (the data set's own code)."""
    try:
        return dataset[index]
    except Exception as exc:
        raise PwmprError(f"cannot read sample {index} of torchvision's {type(dataset).__name__}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from None


def _is_label(label) -> bool:
    """Whether ``label`` is one class number."""
    return isinstance(label, numbers.Integral) or (isinstance(label, torch.Tensor) and label.numel() == 1
                                                   and not label.is_floating_point())


def _size(dataset) -> tuple[tuple[int, int] | int, bool]:
    """``pwmpr.data.own_folder.shared_size`` of a data set's images (up to ``SIZE_SAMPLE``, spread over it), which
    must come with class numbers."""
    sizes = []
    for i in spread(range(len(dataset))):
        image, label = _read(dataset, i)[:2]
        if not hasattr(image, "size") or not hasattr(image, "convert"):
            raise PwmprError(f"torchvision's {type(dataset).__name__} gives {type(image).__name__} samples, not "
                             "images: pwmpr reads image-classification data sets")
        if not _is_label(label):
            raise PwmprError(f"torchvision's {type(dataset).__name__} gives {type(label).__name__} targets, not class "
                             "numbers: pwmpr reads image-classification data sets")
        sizes.append(image.size)
    return shared_size(sizes)


def _labelled(dataset) -> bool:
    """Whether ``dataset``'s samples (up to ``SIZE_SAMPLE``, spread over it) come with class numbers: torchvision
    gives some test splits without labels (None)."""
    return all(_is_label(_read(dataset, i)[1]) for i in spread(range(len(dataset))))


#: Where torchvision data sets usually keep their labels, tried first by ``_labels``.
LABEL_LISTS = ("targets", "labels", "_labels", "samples", "_samples", "y")


def _labels(dataset) -> list[int]:
    """Every label of ``dataset``: from a list it keeps of one class number per sample (an attribute, or one position
    of the tuples it keeps per sample: Caltech's ``y``, Omniglot's ``(name, class)`` pairs) that gives the labels of
    the samples read at up to ``SIZE_SAMPLE`` indices spread over it; else read sample by sample (slow: images are
    decoded)."""
    n = len(dataset)
    read: dict[int, object] = {}
    for labels in _label_lists(dataset, n):
        if not read:
            read = {i: _read(dataset, i)[1] for i in spread(range(n))}
        if all(_is_label(y) and int(y) == labels[i] for i, y in read.items()):
            return labels
    return [int(_read(dataset, i)[1]) for i in range(n)]


def _label_lists(dataset, n: int):
    """The lists of ``n`` class numbers ``dataset`` keeps among its attributes, the ``LABEL_LISTS`` names first:
    a list of class numbers, or each position of a list of tuples that holds one at every row."""
    found = getattr(dataset, "__dict__", {})
    names = [a for a in LABEL_LISTS if a in found] + sorted(a for a in found if a not in LABEL_LISTS)
    for name in names:
        value = found[name]
        try:
            if len(value) != n:
                continue
            first = value[0]
        except (TypeError, KeyError, IndexError):  # no length (a 0-d array), or no order (a set)
            continue
        if isinstance(first, (tuple, list)):
            for k in range(len(first)):
                if all(isinstance(row, (tuple, list)) and len(row) > k and _is_label(row[k]) for row in value):
                    yield [int(row[k]) for row in value]
        elif all(_is_label(y) for y in value):
            yield [int(y) for y in value]


def _classes(dataset, test) -> int:
    """The class count: the data set's ``classes`` list, else the largest label of either split + 1."""
    named = getattr(dataset, "classes", None)
    if isinstance(named, (list, tuple)) and len(named) >= 2:
        seen = {int(_read(dataset, i)[1]) for i in spread(range(len(dataset)))}  # labelled: _size checked them
        outside = sorted(y for y in seen if not 0 <= y < len(named))
        if outside:  # STL10's unlabeled split: -1
            raise PwmprError(f"torchvision's {type(dataset).__name__} names {len(named)} classes but gives label(s) "
                             f"{', '.join(map(str, outside[:3]))}: a classifier needs class numbers 0.."
                             f"{len(named) - 1} (an unlabelled split, say)")
        return len(named)
    labels = _labels(dataset) + (_labels(test) if test is not None else [])
    if min(labels) < 0 or len(set(labels)) < 2:
        raise PwmprError(f"torchvision's {type(dataset).__name__} has labels {min(labels)}..{max(labels)}: a "
                         "classifier needs class numbers 0..K-1 of at least 2 classes")
    return max(labels) + 1


def _length(dataset) -> int:
    """``len(dataset)``, or a PwmprError (a base class torchvision leaves abstract, a data set's own failure)."""
    try:
        return len(dataset)
    except Exception as exc:
        raise PwmprError(f"cannot count the samples of torchvision's {type(dataset).__name__}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from None


@DATASETS.register("torchvision")
def torchvision_dataset(data_dir: str | None = None, path: str = "", augment: str = "auto") -> DataBundle:
    """``torchvision:NAME[:KEY=VALUE,...]``: torchvision's image-classification data set class NAME, built with
    those constructor arguments (module docstring)."""
    class_name, _, arg_text = path.partition(":")
    cls = _class(class_name)
    given = arguments(cls, arg_text)
    root = Path(data_dir or "data")
    opened = dist.on_primary(lambda: _splits(cls, root, True, given), f"downloading {cls.__name__}", share=False)
    train, test = opened if dist.is_primary() else _splits(cls, root, False, given)
    if _length(train) < 3:
        raise PwmprError(f"torchvision's {cls.__name__} holds {len(train)} training sample(s): too few to train on")
    size, fixed = _size(train)
    T = import_torchvision().transforms
    train_tf, eval_tf = (T.Compose([RGB(), *tf.transforms]) for tf in own_transforms(size, fixed, augment))
    shape = (3, *size) if fixed else (3, size, size)
    num_classes = _classes(train, test)
    name = f"torchvision:{cls.__name__}" + (":" + ",".join(f"{k}={v}" for k, v in given.items()) if given else "")
    if test is not None:
        return DataBundle(name, num_classes, shape, own_model(size), _Transformed(train, train_tf),
                          _Transformed(train, eval_tf), _Transformed(test, eval_tf), make_loader=stream_loader)
    keep, held = held_out(len(train))  # as folder:PATH holds out its test split
    Subset = torch.utils.data.Subset
    return DataBundle(name, num_classes, shape, own_model(size), Subset(_Transformed(train, train_tf), keep),
                      Subset(_Transformed(train, eval_tf), keep), Subset(_Transformed(train, eval_tf), held),
                      make_loader=stream_loader)

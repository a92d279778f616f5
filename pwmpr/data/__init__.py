"""DATASETS: name -> loader for every data set pwmpr can train on, and the DataBundle they return.

Small sets are held as tensors on the device, image folders stream through a DataLoader. Splits: ``train``,
``val`` (carved with a fixed seed; drives the stop rule) and ``test`` (reported, never used to decide).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pwmpr.errors import PwmprError
from pwmpr.registry import Registry

SPLIT_SEED = 0  # the train/val/test split does not depend on the run seed, so seeds are comparable


@dataclass
class TensorSplit:
    """One split held as tensors: ``x`` float32 (already normalised) or int64 token ids, ``y`` int64 (a label per
    sample, or per position for next-token targets)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


class TensorLoader:
    """Batches of a TensorSplit on ``device``: shuffled with the CPU ``generator``, augmented on the device.

    ``crop-flip``: a random crop after zero padding of ``crop_pad`` pixels, then a horizontal flip with
    probability 1/2; ``crop``: the crop alone.
    """

    def __init__(self, split: TensorSplit, batch_size: int, device: torch.device, *, shuffle: bool = False,
                 augment: str = "none", generator: torch.Generator | None = None, drop_last: bool = False,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator
        self.drop_last = drop_last and len(self.y) > batch_size
        self.channels_last = channels_last and self.x.dim() == 4
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n = len(self.y) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        plan = self._epoch_plan()
        for i in range(len(self)):
            rows = plan[i * self.batch_size:(i + 1) * self.batch_size]
            idx = rows[:, 0]
            x, y = self.x[idx], self.y[idx]
            if rows.shape[1] > 1:
                x = crop_flip(x, rows[:, 1:3], rows[:, 3].bool(), crop_pad(*x.shape[2:]))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _epoch_plan(self) -> Tensor:
        """One epoch on the device in one copy: per sample its index and, with crop-flip or crop, its two crop
        offsets and flip bit (int64 columns; crop's are 0), drawn batch by batch from ``generator`` in the order of
        earlier versions."""
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:  # every rank draws the same permutation and keeps its own equal-sized shard
            order = order[: n - n % self.world_size][self.rank::self.world_size]
        order = order[: len(self) * self.batch_size]
        columns = [order[:, None]]
        if self.augment in ("crop-flip", "crop") and self.x.dim() == 4:
            offsets, flips = [], []
            pad = crop_pad(*self.x.shape[2:])
            for i in range(len(self)):
                b = len(order[i * self.batch_size:(i + 1) * self.batch_size])
                offsets.append(torch.randint(0, 2 * pad + 1, (b, 2), generator=self.generator))
                if self.augment == "crop-flip":
                    flips.append(torch.rand(b, generator=self.generator) < 0.5)
                else:
                    flips.append(torch.zeros(b, dtype=torch.bool))
            columns += [torch.cat(offsets), torch.cat(flips).long()[:, None]]
        plan = torch.cat(columns, dim=1)
        if self.device.type == "cuda":
            return plan.pin_memory().to(self.device, non_blocking=True)
        return plan.to(self.device)


@dataclass
class DataBundle:
    """A data set ready to train on: its splits, shape, classes and the model it suits by default."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    default_model: str
    train: TensorSplit | object
    val: TensorSplit | object
    test: TensorSplit | object
    augment: str = "none"
    make_loader: Callable[..., Iterable] | None = field(default=None, repr=False)
    workers: int | None = None  # DataLoader worker processes for make_loader bundles (None: from the CPU count)
    input_dtype: torch.dtype = torch.float32  # int64 for token ids (text): what a made-up probe input must be
    val_fixed: bool = False  # the data set brings its own validation split (text, split by document)

    def n_targets(self, split: str) -> int:
        """Number of labels in ``split``: one per sample, or one per position for next-token targets."""
        data = getattr(self, split)
        if isinstance(data, TensorSplit) and data.y.dim() > 1:
            return data.y.numel()
        return len(data)

    def majority_share(self, split: str) -> float | None:
        """The share of ``split``'s labels that its most frequent class holds: the accuracy of guessing that class
        for everything (None where the labels are not held as tensors)."""
        data = getattr(self, split)
        y = getattr(data, "y", None) if isinstance(data, TensorSplit) else None
        if not isinstance(y, Tensor):
            return None
        labels = y.flatten().long()
        labels = labels[labels >= 0]  # an ignored position (-100) is no class
        if labels.numel() == 0:
            return None
        return float(torch.bincount(labels).max()) / labels.numel()

    @property
    def n_train(self) -> int:
        """Number of training samples (per epoch)."""
        return len(self.train)

    def loader(self, split: str, batch_size: int, device: torch.device, *, train: bool = False,
               generator: torch.Generator | None = None, channels_last: bool = False) -> Iterable:
        """Batches of ``split`` ("train", "val" or "test") on ``device``; ``train`` shuffles and augments."""
        data = getattr(self, split)
        if self.make_loader is not None:
            from pwmpr.data.folder import fit_workers

            workers = fit_workers(self.workers, self.input_shape, batch_size)  # within /dev/shm
            return self.make_loader(data, batch_size, device, train=train, generator=generator, workers=workers,
                                    channels_last=channels_last)
        from pwmpr import dist

        shard = train and dist.is_distributed()
        return TensorLoader(data, batch_size, device, shuffle=train, augment=self.augment if train else "none",
                            generator=generator, channels_last=channels_last,
                            rank=dist.rank() if shard else 0, world_size=dist.world_size() if shard else 1)

    def eval_batch(self, train_batch: int) -> int:
        """The evaluation batch: the training batch for streamed data (its host memory is bounded by that batch,
        ``pwmpr.data.folder.loader_budget``), 1024 for tensor splits, which are on the device already."""
        return train_batch if self.make_loader is not None else 1024

    def auto_model(self) -> str:
        """The model ``--model auto`` stands for on this data set."""
        if not self.default_model:
            raise PwmprError(f"data set {self.name!r} holds token ids, and no registered model reads them as a "
                             "classifier: pass --model package.module:function, a model of yours that does (a "
                             "transformers sequence classifier, say)")
        return self.default_model

    def sample_inputs(self, n: int, split: str = "test") -> Tensor:
        """The first ``n`` inputs of ``split`` (for export validation)."""
        data = getattr(self, split)
        if isinstance(data, TensorSplit):
            return data.x[:n].clone()
        xs = [data[i][0] for i in range(min(n, len(data)))]
        return torch.stack(xs)


DATASETS: Registry[Callable[..., DataBundle]] = Registry("data set")


# The stop rules decide on validation-accuracy differences of a point or less (--plateau-tol 0.005 per
# doubling by default, and the saturation fit sees changes of that size). With n validation samples the accuracy
# moves in steps of 1/n and its binomial standard error is sqrt(p(1-p)/n): below 100 samples a single sample moves
# it by more than one point (and the s.e. at p = 0.9 exceeds 3 points), so the rule would be deciding on noise.
MIN_VAL_SAMPLES = 100


def load_data(name: str, data_dir: str | None = None, *, val_fraction: float = 0.1,
              max_train: int | None = None, min_val: int = 1, context: int | None = None,
              augment: str = "auto") -> DataBundle:
    """Load data set ``name`` (``npz:PATH``, ``text:PATH``, ``folder:PATH``, or a registered name) and split off the
    validation set.

    ``min_val``: the fewest validation samples accepted; ``context``: tokens per sample of a text data set;
    ``augment``: one of ``AUGMENTS``, what training sees of an image.
    """
    check_augment(augment)
    factory, arg = _factory(name)
    kwargs: dict = {"data_dir": data_dir} if arg is None else {"data_dir": data_dir, "path": arg}
    takes = inspect.signature(factory).parameters
    if context is not None:
        if "context" not in takes:
            raise PwmprError(f"--context applies to text data sets (pydoc-text, text:PATH), not {name!r}")
        kwargs["context"] = context
    streamed_augment = "augment" in takes  # an image folder builds its transforms
    if streamed_augment:
        kwargs["augment"] = augment
    bundle = factory(**kwargs)
    if not streamed_augment:
        set_augment(bundle, augment)
    if bundle.num_classes < 2:
        raise PwmprError(f"data set {bundle.name!r} has {bundle.num_classes} class; a classifier needs at least 2")
    if bundle.val_fixed:
        return _keep_validation(bundle, max_train, min_val)
    return _split_validation(bundle, val_fraction, max_train, min_val)


def _factory(name: str):
    prefix, colon, rest = name.partition(":")
    if colon and prefix in PATH_DATASETS:
        return DATASETS.get(prefix), rest
    return DATASETS.get(name), None


def context_of(name: str, context: int | None) -> int | None:
    """The tokens per sample data set ``name`` is read with: ``context`` when given, else its loader's default; None
    for a data set that is not read in windows (images, features) or that this pwmpr does not know."""
    try:
        factory, _ = _factory(str(name))
    except PwmprError:
        return context
    param = inspect.signature(factory).parameters.get("context")
    if param is None:
        return context
    return context if context is not None else param.default


#: Data sets named ``prefix:PATH`` (their loader takes ``path``).
PATH_DATASETS = ("npz", "text", "folder", "torchvision")


def data_path(path: str, data_dir: str | None) -> Path:
    """The file or folder ``path`` of a ``prefix:PATH`` data set: as given, or under ``data_dir`` when it is
    relative and does not exist as given."""
    p = Path(path)
    if data_dir and not p.is_absolute() and not p.exists():
        p = Path(data_dir) / p
    return p


def _keep_validation(bundle: DataBundle, max_train: int | None, min_val: int) -> DataBundle:
    """A bundle with its own validation split: check its size and cut the training split to ``max_train``."""
    if len(bundle.val) < min_val:
        raise PwmprError(f"data set {bundle.name!r} has {len(bundle.val)} validation sample(s) (its own split, "
                         f"by document); the stop rule needs at least {min_val}: give it more text")
    if max_train is not None and isinstance(bundle.train, TensorSplit):
        bundle.train = TensorSplit(bundle.train.x[:max_train], bundle.train.y[:max_train])
    return bundle


def _split_validation(bundle: DataBundle, val_fraction: float, max_train: int | None,
                      min_val: int = 1) -> DataBundle:
    full = bundle.train
    n = len(full)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(val_fraction * n)))
    if n_val < min_val:
        need = min_val / n
        hint = (f"raise --val-fraction to at least {math.ceil(need * 1000) / 1000:g}" if need < 0.5 else
                f"this data set is too small for it (it has {n} training samples)")
        raise PwmprError(f"--val-fraction {val_fraction:g} leaves {n_val} validation sample(s) of {bundle.name!r}; "
                         f"the stop rule needs at least {min_val}: {hint}")
    if n - n_val < 1:
        raise PwmprError(f"data set {bundle.name!r} has only {n} training samples: too few to split off validation")
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if max_train is not None:
        train_idx = train_idx[:max_train]
    if isinstance(full, TensorSplit):
        bundle.val = TensorSplit(full.x[val_idx], full.y[val_idx])
        bundle.train = TensorSplit(full.x[train_idx], full.y[train_idx])
    else:
        bundle.val = torch.utils.data.Subset(bundle.val if bundle.val is not None else full, val_idx.tolist())
        bundle.train = torch.utils.data.Subset(full, train_idx.tolist())
    return bundle


def holdout(x: Tensor, y: Tensor, fraction: float) -> tuple[TensorSplit, TensorSplit]:
    """Split arrays into (train, test) with the fixed split seed."""
    gen = torch.Generator().manual_seed(SPLIT_SEED + 1)
    perm = torch.randperm(len(y), generator=gen)
    n_test = max(1, int(round(fraction * len(y))))
    return TensorSplit(x[perm[n_test:]], y[perm[n_test:]]), TensorSplit(x[perm[:n_test]], y[perm[:n_test]])


def normalise(train: TensorSplit, *others: TensorSplit) -> None:
    """Standardise every split in place with per-channel (images, signals) or global (flat data) train statistics."""
    x = train.x
    dims = [0, *range(2, x.dim())] if x.dim() >= 3 else list(range(x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True).clamp_min(1e-6)
    for split in (train, *others):
        split.x = (split.x - mean) / std


# Importing the loaders fills DATASETS.
from pwmpr.data import folder, npz, offline, own_folder, teacher, text, torchvision_any, torchvision_sets  # noqa: E402,F401
from pwmpr.data.augment import AUGMENTS, check_augment, crop_flip, crop_pad, set_augment  # noqa: E402,F401

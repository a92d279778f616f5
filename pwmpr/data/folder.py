"""Image folders streamed through a DataLoader: Tiny ImageNet (64 px) and ImageNet (224 px); ``folder:PATH``, the
user's own images at their own size, is ``pwmpr.data.own_folder``.

``--data-dir`` holds ``train/<class>/...`` and ``val/`` (ImageFolder-shaped or Tiny ImageNet's
``val/images`` + ``val_annotations.txt``); ``val`` is the test split, validation is carved from ``train``.
:func:`stream_loader` serves any map-style Dataset, sharded over ranks, with augmentations seeded per sample so
batches do not depend on the worker count.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pwmpr._tv_compat import import_torchvision
from pwmpr.data import DATASETS, DataBundle
from pwmpr.data.augment import check_augment
from pwmpr.errors import PwmprError
from pwmpr.probe import first_line

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREFETCH = 2  # batches each worker process prepares ahead (the DataLoader's default)
SHM_PATH = "/dev/shm"  # where worker processes hand their batches over (Docker's default size: 64 MB)


def imagenet_transforms(size: int, augment: str = "crop-flip"):
    """(training, evaluation) transforms for Tiny ImageNet and ImageNet at ``size``: up to 64 px a crop from a
    4-pixel padding and a flip, and resize + centre crop; above, ImageNet's random resized crop and flip, and resize
    + centre crop. ``augment`` (``pwmpr.data.AUGMENTS``): ``crop`` drops the flip, ``none`` trains on the
    evaluation transform."""
    T = import_torchvision().transforms
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if size <= 64:
        crop, evaluation = T.RandomCrop(size, padding=4), T.Compose([T.Resize(size), T.CenterCrop(size), *norm])
    else:
        crop, evaluation = T.RandomResizedCrop(size), T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size),
                                                                  *norm])
    return training_transform([crop], norm, evaluation, augment), evaluation


def training_transform(crop: list, rest: list, evaluation, augment: str):
    """The training transform under ``augment`` (``pwmpr.data.AUGMENTS``; ``auto`` is ``crop-flip``): ``crop``
    (the random crop steps) then a horizontal flip then ``rest``; the crop alone; or ``evaluation`` for ``none``."""
    T = import_torchvision().transforms
    check_augment(augment)
    if augment == "none":
        return evaluation
    flip = [T.RandomHorizontalFlip()] if augment in ("auto", "crop-flip") else []
    return T.Compose([*crop, *flip, *rest])


def _folder_bundle(name: str, data_dir: str | None, size: int, model: str, augment: str) -> DataBundle:
    if not data_dir:
        raise PwmprError(f"data set {name!r} needs --data-dir pointing at a folder with train/ and val/")
    root = Path(data_dir)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise PwmprError(f"data directory {root} must contain train/ and val/ folders for {name!r}")
    tv = import_torchvision()
    train_tf, eval_tf = imagenet_transforms(size, augment)
    train = image_folder(tv, root / "train", train_tf)
    train_eval = with_transform(train, eval_tf)  # one scan of the folder, two transforms
    test = test_folder(tv, root / "val", train, eval_tf)
    return DataBundle(name, len(train.classes), (3, size, size), model, train, train_eval, test,
                      make_loader=stream_loader)


#: Folders that are no class: hidden ones (a leading dot) and these, which archivers and Python leave behind.
NOT_CLASSES = ("__MACOSX", "__pycache__")


def visible_image(path: str) -> bool:
    """Whether ``path`` is an image file torchvision reads and not a hidden file (macOS's ``._`` companions)."""
    tv = import_torchvision()
    return not os.path.basename(path).startswith(".") and tv.datasets.folder.has_file_allowed_extension(
        path, tv.datasets.folder.IMG_EXTENSIONS)


def with_transform(dataset, transform):
    """A shallow copy of torchvision ``dataset`` whose images pass through ``transform`` (its samples shared)."""
    copied = copy.copy(dataset)
    copied.transform = transform
    copied.transforms = import_torchvision().datasets.vision.StandardTransform(transform, dataset.target_transform)
    return copied


def image_folder(tv, root: Path, transform, *, allow_empty: bool = False):
    """``root``'s ImageFolder without hidden folders and files (``.ipynb_checkpoints``, ``__MACOSX``, ``._x.png``),
    or a PwmprError saying what it lacks (torchvision's own error names no fix); ``allow_empty``: a class folder
    without images is allowed (a test split may miss a class)."""
    try:
        found = tv.datasets.ImageFolder(str(root), transform=transform, is_valid_file=visible_image, allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        reason = first_line(exc).rstrip(".")
        raise PwmprError(f"cannot read images from {root}: {reason}; it must hold one folder per class, each with "
                         "image files in it") from None
    classes = [c for c in found.classes if not c.startswith(".") and c not in NOT_CLASSES]
    counts = Counter(label for _, label in found.samples)
    empty = [] if allow_empty else [c for c in classes if counts[found.class_to_idx[c]] == 0]
    if not classes or empty or not any(counts[found.class_to_idx[c]] for c in classes):
        what = f"class folder(s) {', '.join(empty[:5])} hold" if empty else "no class folder holds"
        raise PwmprError(f"cannot read images from {root}: {what} no image file torchvision reads (.jpg, .png, "
                         "...); it must hold one folder per class, each with image files in it")
    if len(classes) < len(found.classes):  # number the visible classes 0..K-1
        index = {c: i for i, c in enumerate(classes)}
        found.samples = found.imgs = [(path, index[found.classes[label]]) for path, label in found.samples
                                      if found.classes[label] in index]
        found.targets = [label for _, label in found.samples]
        found.classes, found.class_to_idx = classes, index
    return found


def test_folder(tv, root: Path, train, transform):
    """The test split in ``root``: Tiny ImageNet's ``images/`` + ``val_annotations.txt`` or one folder per class,
    its labels numbered as the training split's classes (a class the training split lacks is an error; one it
    misses is allowed)."""
    ann = root / "val_annotations.txt"
    if ann.exists():
        samples, unknown = [], set()
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                if parts[1] in train.class_to_idx:
                    samples.append((str(root / "images" / parts[0]), train.class_to_idx[parts[1]]))
                else:
                    unknown.add(parts[1])
    else:
        own = image_folder(tv, root, transform, allow_empty=True)
        unknown = set(own.classes) - set(train.class_to_idx)
        samples = [(path, train.class_to_idx[own.classes[label]]) for path, label in own.samples
                   if own.classes[label] in train.class_to_idx]
    if unknown:
        raise PwmprError(f"test images in {root} have class(es) the training split lacks: "
                         f"{', '.join(sorted(unknown)[:5])}")
    test = with_transform(train, transform)  # the training folder's classes, no second scan
    test.root = str(root)
    test.samples = test.imgs = samples
    test.targets = [label for _, label in samples]
    return test


def default_workers() -> int:
    """Loader worker processes per rank: the CPUs this process may use, split over the ranks of this node, minus
    one for the training loop; at most 8 (more rarely helps one GPU); 0 (load in the main process) on one CPU."""
    try:
        n_cpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n_cpu = os.cpu_count() or 1
    per_rank = n_cpu // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_rank - 1))


@dataclass(frozen=True)
class LoaderBudget:
    """The host memory one rank's streamed loaders hold at most, in bytes.

    Attributes:
        batch_bytes: one batch: samples x (float32 inputs + an int64 label).
        shm_bytes: ``workers x PREFETCH`` batches in ``/dev/shm`` (0 without workers).
        host_bytes: ``shm_bytes`` plus two batches (the one being pinned and the one in use).
    """

    batch_bytes: int
    shm_bytes: int
    host_bytes: int


def loader_budget(input_shape: Sequence[int], batch_size: int, workers: int, prefetch: int = PREFETCH) -> LoaderBudget:
    """The bound on host memory of one rank's loaders at ``batch_size`` (training and evaluation alike) with
    ``workers`` worker processes: one loader's batches are in flight at a time (module docstring)."""
    batch = batch_size * (4 * math.prod(input_shape) + 8)
    if workers <= 0:
        return LoaderBudget(batch, 0, batch)  # built and used in the main process, one at a time
    in_flight = workers * prefetch
    return LoaderBudget(batch, in_flight * batch, (in_flight + 2) * batch)


def shm_size(path: str = SHM_PATH) -> int | None:
    """The size of the shared-memory file system in bytes, None where there is none (not Linux)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_blocks * st.f_frsize


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def fit_workers(requested: int | None, input_shape: Sequence[int], batch_size: int) -> int:
    """The worker count whose batches fit this rank's share of ``/dev/shm``: ``requested`` (None: the default).

    A default that does not fit falls back (with a warning); an explicit ``--workers`` that does not is a PwmprError.
    """
    workers = default_workers() if requested is None else int(requested)
    size = shm_size()
    if workers <= 0 or size is None:
        return workers
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # every rank of this node shares /dev/shm
    need = loader_budget(input_shape, batch_size, workers).shm_bytes
    if need * ranks <= size:
        return workers
    fits = min(workers, size // ranks // loader_budget(input_shape, batch_size, 1).shm_bytes)
    advice = (f"{SHM_PATH} holds {_gib(size)}, less than the {_gib(need * ranks)} that {workers} loader workers "
              f"per rank x {ranks} rank(s) need at batch {batch_size} ({PREFETCH} batches each in flight); in Docker "
              f"pass --shm-size {math.ceil(1.25 * need * ranks / 2**30)}g or --ipc=host")
    if requested is not None:
        raise PwmprError(f"{advice}, or lower --workers (at most {fits} fit) or --batch-size")
    if advice not in _WARNED:
        _WARNED.add(advice)
        log.warning("%s; using %d worker(s) meanwhile", advice, fits)
    return fits


_WARNED: set[str] = set()


def _mix(epoch_seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in the epoch with seed ``epoch_seed`` (splitmix64 finaliser)."""
    z = (epoch_seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class _SeededSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler (this rank's shard of the epoch) that hands out ``(index, epoch seed)`` pairs."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in super().__iter__():
            yield i, self.epoch


class _SeededDataset(torch.utils.data.Dataset):
    """``dataset[index]`` with torch's and Python's RNG seeded from (epoch seed, index) first, in whichever worker."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch_seed = key
        seed = _mix(epoch_seed, index)
        if torch.utils.data.get_worker_info() is not None:  # a worker's RNGs are its own
            return _seeded_item(self.dataset, index, seed)
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        try:  # in the main process: the caller's global RNGs are left as they were
            return _seeded_item(self.dataset, index, seed)
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)


def _seeded_item(dataset, index: int, seed: int):
    """``dataset[index]`` after seeding torch's CPU and Python's global RNG with ``seed`` (random transforms)."""
    # The CPU generator only: torch.manual_seed also reseeds every accelerator backend, ~300 us a call here.
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    return dataset[index]


class StreamLoader:
    """Batches of a map-style Dataset on ``device``; ``len()`` is this rank's batches per epoch.

    Args:
        batch_size: samples per batch (per rank).
        train: shuffle, drop the last partial batch, and shard over torchrun ranks.
        generator: the run's data-order generator (one draw per epoch).
        workers: worker processes (None: :func:`default_workers`); they persist between epochs when ``train``.
        channels_last: hand conv inputs over in channels_last memory format.
    """

    def __init__(self, data, batch_size: int, device: torch.device, *, train: bool = False,
                 generator: torch.Generator | None = None, workers: int | None = None, channels_last: bool = False,
                 collate_fn=None) -> None:
        from pwmpr import dist

        self.device = torch.device(device)
        self.train = train
        self.generator = generator
        self.channels_last = channels_last
        self.epoch = 0
        shard = train and dist.is_distributed()
        self.sampler = _SeededSampler(data, num_replicas=dist.world_size() if shard else 1,
                                      rank=dist.rank() if shard else 0, shuffle=train, seed=0, drop_last=train)
        self.workers = default_workers() if workers is None else int(workers)
        self.loader = torch.utils.data.DataLoader(
            _SeededDataset(data), batch_size=batch_size, sampler=self.sampler, num_workers=self.workers,
            collate_fn=collate_fn, pin_memory=self.device.type == "cuda", drop_last=train,
            # Evaluation's workers end with its pass, so they never hold memory beside training's (module docstring).
            persistent_workers=train and self.workers > 0, prefetch_factor=PREFETCH if self.workers > 0 else None,
            # Worker base seeds come from this private generator, never from torch's global RNG (checkpointed).
            generator=torch.Generator().manual_seed(0),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.train:  # a new order and new augmentations every epoch, the same on every rank
            seed = int(torch.randint(0, 2**62, (), generator=self.generator)) if self.generator is not None else \
                self.epoch
            self.sampler.set_epoch(seed)
            self.epoch += 1
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def stream_loader(data, batch_size: int, device: torch.device, *, train: bool = False,
                  generator: torch.Generator | None = None, workers: int | None = None,
                  channels_last: bool = False) -> StreamLoader:
    """A :class:`StreamLoader` (the ``make_loader`` of image-folder bundles)."""
    return StreamLoader(data, batch_size, device, train=train, generator=generator, workers=workers,
                        channels_last=channels_last)


@DATASETS.register("tinyimagenet")
def tinyimagenet(data_dir: str | None = None, augment: str = "auto") -> DataBundle:
    """Tiny ImageNet (200 classes, 64x64) from an image folder."""
    return _folder_bundle("tinyimagenet", data_dir, 64, "resnet18", augment)


@DATASETS.register("imagenet")
def imagenet(data_dir: str | None = None, augment: str = "auto") -> DataBundle:
    """ImageNet (1000 classes, 224x224) from an image folder."""
    return _folder_bundle("imagenet", data_dir, 224, "resnet50", augment)

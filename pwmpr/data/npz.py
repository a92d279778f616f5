"""``npz:PATH``: arrays ``x`` of features (N, D), signals (N, C, L) or images (N, C, H, W) with integer labels ``y``;
optional ``x_test``, ``y_test``. Images stored channels-last (N, H, W, C), as PIL, Keras and TensorFlow keep them,
are moved to (N, C, H, W). Or ``tokens`` (N, L) of token ids (text to classify, for a model that reads ids) instead
of ``x``, with ``tokens_test``."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from pwmpr.data import DATASETS, DataBundle, TensorSplit, data_path, holdout, normalise
from pwmpr.errors import PwmprError

log = logging.getLogger(__name__)

#: The channel counts of stored images: grayscale, RGB, RGBA.
IMAGE_CHANNELS = (1, 3, 4)


def _arrays(z, xk: str, yk: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features, signals or images as float32, and their labels."""
    x = np.asarray(z[xk])
    if x.ndim not in (2, 3, 4):
        raise PwmprError(f"npz {path}: {xk!r} must have shape (N, D), (N, C, L) or (N, C, H, W), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise PwmprError(f"npz {path}: {xk!r} must hold finite numbers")
    x = _channels_first(x, xk, path)
    return torch.as_tensor(x.astype(np.float32)), _labels(z, yk, xk, len(x), path)


def _channels_first(x: np.ndarray, xk: str, path: Path) -> np.ndarray:
    """``x`` with images stored channels-last (N, H, W, C: a last dim of 1, 3 or 4 channels after a second dim
    above 4, more channels than stored images have) moved to torch's (N, C, H, W), saying so; ``x`` as it is
    otherwise. Square (N, L, L) arrays stay signals, with a hint that grayscale images need their channel axis."""
    if x.ndim == 4 and x.shape[-1] in IMAGE_CHANNELS and x.shape[1] > max(IMAGE_CHANNELS):
        if not xk.endswith("_test"):
            log.warning("npz %s: %r of shape %s is read as images stored channels-last (N, H, W, C) and moved to "
                        "(N, C, H, W)", path, xk, tuple(x.shape))
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))
    if x.ndim == 3 and x.shape[1] == x.shape[2] and x.shape[1] > 1 and not xk.endswith("_test"):
        log.warning("npz %s: %r of shape %s is read as signals (N, C, L) of %d channels; if they are grayscale "
                    "images, save them as (N, 1, H, W)", path, xk, tuple(x.shape), x.shape[1])
    return x


def _tokens(z, xk: str, yk: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, L) as int64, and their labels."""
    x = np.asarray(z[xk])
    if x.ndim != 2:
        raise PwmprError(f"npz {path}: {xk!r} must have shape (N, L) of token ids, got {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise PwmprError(f"npz {path}: {xk!r} must hold integer token ids, got {x.dtype}")
    if x.shape[1] == 0:
        raise PwmprError(f"npz {path}: {xk!r} holds sequences of no tokens")
    if x.size and (x.min() < 0 or x.max() > np.iinfo(np.int64).max):
        raise PwmprError(f"npz {path}: {xk!r} holds token ids out of range (negative, or above int64's)")
    return torch.as_tensor(x.astype(np.int64)), _labels(z, yk, xk, len(x), path)


def _labels(z, yk: str, xk: str, n: int, path: Path) -> torch.Tensor:
    """The class labels ``yk``, one per sample of ``xk`` (``n`` of them), as int64."""
    y = np.asarray(z[yk])
    if y.ndim != 1:
        raise PwmprError(f"npz {path}: {yk!r} must be a 1-D label array, got shape {y.shape}")
    if n != len(y):
        raise PwmprError(f"npz {path}: {xk!r} has {n} samples but {yk!r} has {len(y)}")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise PwmprError(f"npz {path}: {yk!r} must hold integer class labels")
    if len(y) and y.min() < 0:
        raise PwmprError(f"npz {path}: {yk!r} holds negative labels")
    return torch.as_tensor(y.astype(np.int64))


def _class_count(y: torch.Tensor, p: Path) -> int:
    """K for labels 0..K-1, every one of them present: a label far above the others (a typo, a sentinel such as
    1e9) would otherwise make a model with that many outputs."""
    present = torch.unique(y)
    k = int(present.max()) + 1
    if len(present) < 2:
        raise PwmprError(f"npz {p}: every label is {int(present[0])}; a classifier needs at least 2 classes")
    if len(present) != k:
        missing = k - len(present)
        raise PwmprError(f"npz {p}: labels must be the class numbers 0..K-1 with every class present; the largest "
                         f"label is {k - 1} but {missing} of the classes 0..{k - 1} never occur")
    return k


@DATASETS.register("npz")
def npz(data_dir: str | None = None, path: str = "") -> DataBundle:
    """Arrays from a .npz file; without ``x_test``/``y_test`` 20% is held out as the test split."""
    p = data_path(path, data_dir)
    if not path or not p.is_file():
        raise PwmprError(f"npz file not found: {path or '(empty path)'}; use --data npz:PATH")
    try:
        return _read(p)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        if isinstance(exc, PwmprError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Object arrays" in reason or "pickled" in reason:
            reason = "it holds an object array (pickled Python objects), which pwmpr never loads"
        raise PwmprError(f"cannot read npz file {p}: {reason}") from None


def _read(p: Path) -> DataBundle:
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":
        raise PwmprError(f"cannot read npz file {p}: it is not an npz file (neither a zip archive of arrays nor "
                         "numpy data)")
    z = np.load(p, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise PwmprError(f"{p} is a single .npy array, not an .npz archive with arrays x and y")
    with z:
        bad = [n for n in z.zip.namelist() if not n.endswith(".npy")]
        if bad:
            raise PwmprError(f"{p} is a zip file but not an npz archive: {', '.join(bad[:3])} are not .npy arrays")
        keys = set(z.files)
        if {"x", "tokens"} <= keys:
            raise PwmprError(f"npz {p} holds both 'x' and 'tokens': give features or token ids, not both")
        tokens = "tokens" in keys
        xk, read = ("tokens", _tokens) if tokens else ("x", _arrays)
        missing = {xk, "y"} - keys
        if missing:
            raise PwmprError(f"npz {p} lacks array(s) {', '.join(sorted(missing))}; it has: {', '.join(sorted(keys))}")
        x, y = read(z, xk, "y", p)
        if len(y) < 10:
            raise PwmprError(f"npz {p}: only {len(y)} samples; need at least 10")
        xtk = f"{xk}_test"
        if (xtk in keys) != ("y_test" in keys):
            raise PwmprError(f"npz {p}: give both {xtk} and y_test, or neither")
        if xtk in keys:
            xt, yt = read(z, xtk, "y_test", p)
            if xt.shape[1:] != x.shape[1:]:
                raise PwmprError(
                    f"npz {p}: {xtk} samples have shape {tuple(xt.shape[1:])}, {xk} has {tuple(x.shape[1:])}"
                )
            train, test = TensorSplit(x, y), TensorSplit(xt, yt)
        else:
            train, test = holdout(x, y, 0.2)
    num_classes = _class_count(torch.cat([train.y, test.y]), p)
    shape = tuple(x.shape[1:])
    if tokens:  # ids are not standardised; no registered model reads them as a classifier
        return DataBundle(f"npz:{p}", num_classes, shape, "", train, None, test, input_dtype=torch.int64)
    normalise(train, test)
    return DataBundle(f"npz:{p}", num_classes, shape, "mlp" if len(shape) == 1 else "cnn", train, None, test)

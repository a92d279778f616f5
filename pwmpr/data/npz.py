"""``npz:PATH``: any arrays ``x`` (N, C, H, W) or (N, D) with integer labels ``y``; optional ``x_test``, ``y_test``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pwmpr.data import DATASETS, DataBundle, TensorSplit, holdout, normalise
from pwmpr.errors import PwmprError


def _arrays(z, xk: str, yk: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = np.asarray(z[xk]), np.asarray(z[yk])
    if x.ndim not in (2, 4):
        raise PwmprError(f"npz {path}: {xk!r} must have shape (N, D) or (N, C, H, W), got {x.shape}")
    if y.ndim != 1:
        raise PwmprError(f"npz {path}: {yk!r} must be a 1-D label array, got shape {y.shape}")
    if len(x) != len(y):
        raise PwmprError(f"npz {path}: {xk!r} has {len(x)} samples but {yk!r} has {len(y)}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise PwmprError(f"npz {path}: {xk!r} must hold finite numbers")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise PwmprError(f"npz {path}: {yk!r} must hold integer class labels")
    if len(y) and y.min() < 0:
        raise PwmprError(f"npz {path}: {yk!r} holds negative labels")
    return torch.as_tensor(x.astype(np.float32)), torch.as_tensor(y.astype(np.int64))


@DATASETS.register("npz")
def npz(data_dir: str | None = None, path: str = "") -> DataBundle:
    """Arrays from a .npz file; without ``x_test``/``y_test`` 20% is held out as the test split."""
    p = Path(path)
    if data_dir and not p.is_absolute() and not p.exists():
        p = Path(data_dir) / p
    if not path or not p.is_file():
        raise PwmprError(f"npz file not found: {path or '(empty path)'}; use --data npz:PATH")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PwmprError(f"cannot read npz file {p}: {exc}") from None
    with z:
        keys = set(z.files)
        missing = {"x", "y"} - keys
        if missing:
            raise PwmprError(f"npz {p} lacks array(s) {', '.join(sorted(missing))}; it has: {', '.join(sorted(keys))}")
        x, y = _arrays(z, "x", "y", p)
        if len(y) < 10:
            raise PwmprError(f"npz {p}: only {len(y)} samples; need at least 10")
        if ("x_test" in keys) != ("y_test" in keys):
            raise PwmprError(f"npz {p}: give both x_test and y_test, or neither")
        if "x_test" in keys:
            xt, yt = _arrays(z, "x_test", "y_test", p)
            if xt.shape[1:] != x.shape[1:]:
                raise PwmprError(
                    f"npz {p}: x_test samples have shape {tuple(xt.shape[1:])}, x has {tuple(x.shape[1:])}"
                )
            train, test = TensorSplit(x, y), TensorSplit(xt, yt)
        else:
            train, test = holdout(x, y, 0.2)
    normalise(train, test)
    num_classes = int(max(int(train.y.max()), int(test.y.max()))) + 1
    shape = tuple(x.shape[1:])
    return DataBundle(f"npz:{p}", num_classes, shape, "mlp" if len(shape) == 1 else "cnn", train, None, test)

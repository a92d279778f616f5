"""The held-out discovery benchmark's synthetic tabular data set, written as ``npz:`` files anyone can regenerate.

    python3 bench/discovery_data.py DIR     # writes DIR/tabular.npz (skipped when it is already there)

``tabular``: scikit-learn's ``make_classification`` (Guyon's hypercube construction: 6 classes, each 3 Gaussian
clusters on the vertices of a 12-dimensional hypercube, 8 redundant linear combinations, 20 noise features, 2% of
the labels flipped), 20,000 samples with a fixed random state. Unlike ``teacher`` its labels come from no network,
and at pwmpr's default splits it has 4,000 test and 1,600 validation samples. The parameters were fixed before the
benchmark first ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TABULAR = dict(n_samples=20_000, n_features=40, n_informative=12, n_redundant=8, n_classes=6,
               n_clusters_per_class=3, class_sep=1.0, flip_y=0.02, random_state=20261206)


def tabular() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the ``tabular`` set: float32 features (N, 40) and int64 labels 0..5."""
    from sklearn.datasets import make_classification

    x, y = make_classification(**TABULAR)
    return x.astype(np.float32), y.astype(np.int64)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/discovery_data.py DIR")
    out = Path(sys.argv[1])
    path = out / "tabular.npz"
    if path.is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    x, y = tabular()
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    classes = int(y.max()) + 1
    print(f"bench/discovery_data.py: wrote {path} ({len(y)} samples, {x.shape[1]} features, {classes} classes)")


if __name__ == "__main__":
    main()

"""``teacher``: a teacher-student task with a known sparse structure and a validation set of thousands.

64 standard normal features labelled by a fixed random sparse teacher (64 -> 16 -> 10, ReLU), all from
``TEACHER_SEED``: no download, and 3,200 validation samples at ``--val-fraction 0.1``, so one validation point
is not mostly noise.
"""

from __future__ import annotations

import torch

from pwmpr.data import DATASETS, DataBundle, holdout, normalise

TEACHER_SEED = 20260905
TEACHER_DENSITY = 0.5
N_SAMPLES = 40_000  # 8,000 test; of the 32,000 left, the default --val-fraction 0.1 keeps 3,200 for validation
WIDTHS = (64, 16, 10)


def teacher_labels(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Labels of ``x`` by the random sparse teacher drawn from ``gen``, balanced over its classes."""
    h = x
    for i, (n_in, n_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
        w = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / (TEACHER_DENSITY * n_in) ** 0.5
        w *= torch.rand(n_out, n_in, generator=gen, dtype=torch.float64) < TEACHER_DENSITY
        h = h @ w.T
        if i < len(WIDTHS) - 2:
            h = h.relu()
    # Offsets that make each class about as frequent as the others (a few steps of a fixed-point iteration).
    offset = torch.zeros(WIDTHS[-1], dtype=torch.float64)
    for _ in range(200):
        share = torch.bincount((h - offset).argmax(1), minlength=WIDTHS[-1]).double() / len(h)
        offset += 0.5 * (share - 1.0 / WIDTHS[-1]) * h.std()
    return (h - offset).argmax(1)


@DATASETS.register("teacher")
def teacher(data_dir: str | None = None) -> DataBundle:
    """40,000 samples labelled by a fixed random sparse teacher network (made on the spot, no download)."""
    gen = torch.Generator().manual_seed(TEACHER_SEED)
    x = torch.randn(N_SAMPLES, WIDTHS[0], generator=gen, dtype=torch.float64)
    y = teacher_labels(x, gen)
    train, test = holdout(x.float(), y.long(), 0.2)
    normalise(train, test)
    return DataBundle("teacher", WIDTHS[-1], (WIDTHS[0],), "mlp", train, None, test)

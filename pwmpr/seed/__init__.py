"""Seed masks, step 1 of the pipeline: PHEW random walks (the PWMPR seed) and one-shot baselines.

``SEEDS`` maps a method name to a factory ``(model, density, input_shape, seed) -> MaskSet``:

* ``phew``: PHEW (Patil & Dovrolis 2021; docs/method.md, Seed), biased random input-output walks on the model's real
  compute graph (``pwmpr.graph``), vectorised;
* ``random``: a uniformly random global mask;
* ``magnitude``: global top-|w|;
* ``synflow``: iterative SynFlow (Tanaka et al. 2020), 100 rounds on an exponential schedule.

Seeds only choose masks: they never change the model, and kept weights keep their values (docs/method.md, Seed);
``pwmpr.seed.scale`` (``--init-scale``) is the one step that may rescale them, once a start mask is chosen.
All randomness comes from a ``torch.Generator`` seeded with ``seed``; the global RNG is left alone.
"""

from __future__ import annotations

from pwmpr.seed.common import SEEDS, SeedFactory
from pwmpr.seed.phew import phew_masks

# isort: split
# After phew: SEEDS lists its seeds in registration order, PHEW first.
from pwmpr.seed.baselines import magnitude_masks, synflow_masks, uniform_masks

__all__ = ["SEEDS", "SeedFactory", "magnitude_masks", "phew_masks", "synflow_masks", "uniform_masks"]

"""The unit graph of a model: the DAG of unit groups that PHEW walks follow (docs/method.md, Seed and Operations).

A *unit group* is a set of channels (conv maps) or features (token and flat tensors). Each use of a weight is a
*link* between groups; elementwise ops on two activations (residual adds, gates), attention's q/k/v and the joins of
concatenated or permuted channels are *merges*; unit-preserving ops (norms, activations, pools, dropout, reshapes)
keep the units they got. The graph is read from one real forward pass (:mod:`pwmpr.graph.trace`), not from the
order of ``model.parameters()``, with the op table of :mod:`pwmpr.graph.ops`.

Choices, and where they follow or leave PHEW:

* A flatten of a ``C x H x W`` map feeding a Linear leaves ``H x W`` input features per channel: the Linear links
  each channel through all of them (its *cells*), ``N[o, c]`` sums ``|W0|`` over them and one is picked per hop with
  probability ``|W0|`` (PHEW picks the position uniformly; after global pooling both agree).
* A grouped or depthwise convolution links a unit only to the units of its own group.
* Attention merges the units of q, k and v feature by feature (``q_j``, ``k_j``, ``v_j`` feed output unit ``j`` like
  a 3-way residual add), so all three get seed edges. Heads are not modelled.
* Path masses (``path_masses``) are computed in this unit graph with edge weights ``N[o, c]``: spatial extent,
  padding and pooling factors are ignored (the |W0| scoring network of docs/method.md, Score differs only by such
  per-position factors, which cancel in the fork choices).
"""

from pwmpr.graph.trace import build_unit_graph
from pwmpr.graph.units import Link, UnitGraph, UnitGroup, mixing_weights

__all__ = ["Link", "UnitGraph", "UnitGroup", "build_unit_graph", "mixing_weights"]

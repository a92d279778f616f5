"""The unit graph of a model: the DAG of channel/feature groups that PHEW walks follow (docs/method.md, Seed).

A *unit group* is a tensor of the compute graph whose units are channels (conv maps) or features (token and
flat tensors). Prunable Conv/Linear layers are the *links* between groups; residual adds (and the stages of a
module with ``phew_stages``, such as attention's q/k/v) are *merges*; unit-preserving ops (BatchNorm, LayerNorm,
activations, pools, dropout, identity, transposes, token concat/select, constant adds) keep the group they got. The
graph is read from the model's real compute graph with ``torch.fx`` (shapes from one recorded forward pass), not from
the order of ``model.parameters()``.

Choices, and where they follow or leave PHEW:

* A flatten of a ``C x H x W`` map feeding a Linear is an *expansion*: the Linear is treated as a conv whose
  kernel is the spatial map, so ``N[o, c]`` sums ``|W0|`` over the positions of channel ``c`` and one position is
  picked per hop with probability ``|W0|`` (PHEW picks the position uniformly; after GAP both agree).
* A module whose type declares ``phew_stages`` (:data:`STAGES_HOOK`; e.g. ``pwmpr.models.vit.Attention``:
  ``(("q", "k", "v"), ("proj",))``) is a leaf expanded from that declaration: the Linear children of each stage
  are links from the stage's input group, merged (like a residual add) into the next stage's input. For
  attention, output unit ``j`` of ``proj``'s input is thus reached from ``q_j``, ``k_j`` or ``v_j``, so all three
  get seed edges. Heads are not modelled.
* Path masses (``path_masses``) are computed in this channel-level graph with edge weights ``N[o, c]``: spatial
  extent, padding and pooling factors are ignored and attention counts as the 3-way merge above (the |W0|
  scoring network of docs/method.md, Score differs only by such per-position factors, which cancel in the fork
  choices).
"""

from pwmpr.graph.trace import build_unit_graph
from pwmpr.graph.units import STAGES_HOOK, Group, Link, UnitGraph, mixing_weights

__all__ = ["STAGES_HOOK", "Group", "Link", "UnitGraph", "build_unit_graph", "mixing_weights"]

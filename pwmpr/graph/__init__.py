"""The unit graph of a model: the DAG of unit groups that PHEW walks follow (docs/method.md, Seed and Operations).

Read from one real forward pass (:mod:`pwmpr.graph.trace`, op table :mod:`pwmpr.graph.ops`); path masses as in
docs/method.md, Score.
"""

from pwmpr.graph.trace import build_unit_graph
from pwmpr.graph.units import Link, UnitGraph, UnitGroup, mixing_weights

__all__ = ["Link", "UnitGraph", "UnitGroup", "build_unit_graph", "mixing_weights"]

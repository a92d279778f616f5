"""Bit-packing of masks, and the in-graph decode of packed ONNX weights that onnxruntime folds away.

Bit layout (``masks.safetensors`` and the ``packed`` ONNX encoding): the C-order flattened mask packed by
``np.packbits(flat, bitorder="little")``; element ``i`` is bit ``i % 8`` of byte ``i // 8``, the last byte
zero-padded.

A packed ONNX group (one per dtype) stores ``pwmpr.<g>.values`` (the nonzero values, then one zero),
``pwmpr.<g>.bits``, ``pwmpr.<g>.sizes`` and ``W_i.pwmpr_shape``, decoded by standard operators (opset >= 18)::

    m     = Reshape(BitwiseAnd(BitShift(bits, [[0..7]], RIGHT), 1), [-1])[:n]    # uint8 0/1
    idx   = CumSum(Cast<int64>(m), exclusive=1)        # each kept entry -> its position in the values
    flat  = Where(Cast<bool>(m), Gather(values, idx), 0)
    W_i   = Reshape(Split(flat, sizes)[i], shape_i)

All inputs are constants, so onnxruntime's constant folding turns the decode into dense weights at session start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pwmpr.errors import PwmprError

BITORDER = "little"
SHAPE_SUFFIX = ".pwmpr_shape"
PREFIX = "pwmpr."
# Operators that only the decode subgraph uses; none of them may survive onnxruntime's constant folding.
DECODE_OPS = ("BitShift", "BitwiseAnd", "CumSum")
# onnxruntime skips folding a node whose output exceeds 1 GB; the int64 index of a group is 8 bytes per entry.
GROUP_MAX_ELEMENTS = 1 << 25
# Per packed weight: its shape constant, a Reshape node and a Split output, in bytes (about).
PACKED_LAYER_OVERHEAD = 120


def _as_bool_array(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool, copy=False)


def pack_bits(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pack a mask of any shape into ``ceil(numel / 8)`` uint8 bytes (C order, little bit order)."""
    return np.packbits(_as_bool_array(mask).reshape(-1), bitorder=BITORDER)


def unpack_bits(bits: np.ndarray | torch.Tensor, shape: Sequence[int], name: str = "mask") -> np.ndarray:
    """Rebuild the bool mask of ``shape`` from :func:`pack_bits` output.

    Raises:
        PwmprError: ``bits`` is not a 1-D uint8 array of ``ceil(prod(shape) / 8)`` bytes, or padding bits are set.
    """
    if isinstance(bits, torch.Tensor):
        bits = bits.detach().cpu().numpy()
    bits = np.asarray(bits)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise PwmprError(f"{name}: bad mask shape {shape!r}") from None
    if any(s < 0 for s in shape):
        raise PwmprError(f"{name}: bad mask shape {list(shape)}")
    n = int(np.prod(shape, dtype=np.int64))
    if bits.dtype != np.uint8 or bits.ndim != 1:
        raise PwmprError(f"{name}: packed mask must be a 1-D uint8 tensor, got {bits.dtype} of shape {bits.shape}")
    if bits.size != (n + 7) // 8:
        raise PwmprError(f"{name}: packed mask has {bits.size} bytes but shape {list(shape)} needs {(n + 7) // 8}")
    flat = np.unpackbits(bits, bitorder=BITORDER)
    if flat[n:].any():
        raise PwmprError(f"{name}: packed mask has padding bits set beyond its {n} entries")
    return flat[:n].astype(bool).reshape(shape)


def masks_digest(masks: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    r"""sha256 of masks in sorted name order, each as ``"<name>:<d0>x<d1>x...\n"`` then its :func:`pack_bits` bytes."""
    h = hashlib.sha256()
    for name in sorted(masks):
        mask = _as_bool_array(masks[name])
        h.update(f"{name}:{'x'.join(str(d) for d in mask.shape)}\n".encode())
        h.update(pack_bits(mask).tobytes())
    return h.hexdigest()


def worth_packing(n: int, k: int, itemsize: int) -> bool:
    """Whether a weight of ``n`` entries, ``k`` nonzero, is smaller packed (values + 1 bit each) than dense."""
    return itemsize * k + (n + 7) // 8 + PACKED_LAYER_OVERHEAD < itemsize * n


def pack_group(weights: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(values, bits) of a group of same-dtype weights: their nonzero values then one zero, and packed pattern."""
    flats = [np.ascontiguousarray(w).reshape(-1) for w in weights]
    keep = np.concatenate([f != 0 for f in flats])
    values = np.concatenate([f[f != 0] for f in flats] + [np.zeros(1, flats[0].dtype)])
    return values, np.packbits(keep, bitorder=BITORDER)


def unpack_group(values: np.ndarray, bits: np.ndarray, shapes: Sequence[Sequence[int]],
                 name: str = "group") -> list[np.ndarray]:
    """The numpy twin of the in-graph decode: the dense weights of a group from :func:`pack_group` output."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    keep = unpack_bits(np.asarray(bits).reshape(-1), (sum(sizes),), name)
    k = int(keep.sum())
    values = np.asarray(values)
    if values.ndim != 1 or values.size != k + 1:
        raise PwmprError(f"{name}: {values.size} packed values for {k} set bits (expected {k + 1})")
    flat = np.zeros(keep.size, dtype=values.dtype)
    flat[keep] = values[:k]
    bounds = np.cumsum([0, *sizes])
    return [flat[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes, strict=True)]


def group_names(group: int) -> dict[str, str]:
    """Initializer names of packed group ``group``: values, bits, sizes."""
    return {part: f"{PREFIX}{group}.{part}" for part in ("values", "bits", "sizes")}


def decode_group(group: int, names: Sequence[str], weights: Sequence[np.ndarray], opset: int):
    """ONNX nodes and initializers that rebuild the weights ``names`` (same dtype) from packed group number ``group``.

    The decoded tensors keep the weights' names. Returns ``(nodes, initializers)``; the shared constants
    (``pwmpr.shifts`` ...) come back each time: add each name once.
    """
    from onnx import TensorProto, helper, numpy_helper

    if opset < 18:
        raise PwmprError(f"the packed encoding needs opset >= 18 (BitwiseAnd), got {opset}")
    values, bits = pack_group(weights)
    sizes = np.array([w.size for w in weights], np.int64)
    n = int(sizes.sum())
    g = group_names(group)
    zero = f"{PREFIX}zero_{values.dtype.name}"
    shared = {f"{PREFIX}shifts": np.arange(8, dtype=np.uint8).reshape(1, 8), f"{PREFIX}one_u8": np.array([1], np.uint8),
              f"{PREFIX}flat": np.array([-1], np.int64),
              f"{PREFIX}axis0": np.array(0, np.int64), zero: np.zeros((), values.dtype)}
    inits = [numpy_helper.from_array(values, g["values"]), numpy_helper.from_array(bits.reshape(-1, 1), g["bits"])]
    inits += [numpy_helper.from_array(np.array(w.shape, np.int64), name + SHAPE_SUFFIX)
              for name, w in zip(names, weights, strict=True)]
    inits += [numpy_helper.from_array(v, k) for k, v in shared.items()]
    nodes: list = []

    def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [f"{PREFIX}{group}/{len(nodes)}"]
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    bit = node("BitwiseAnd", [node("BitShift", [g["bits"], f"{PREFIX}shifts"], direction="RIGHT"), f"{PREFIX}one_u8"])
    m = node("Reshape", [bit, f"{PREFIX}flat"])
    if n % 8:  # drop the padding bits of the last byte
        inits.append(numpy_helper.from_array(np.array([n], np.int64), f"{PREFIX}{group}.n"))
        # only here: an initializer no node reads makes onnxruntime warn at every session start
        inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{PREFIX}zero_i64"))
        m = node("Slice", [m, f"{PREFIX}zero_i64", f"{PREFIX}{group}.n"])
    idx = node("CumSum", [node("Cast", [m], to=TensorProto.INT64), f"{PREFIX}axis0"], exclusive=1)
    flat = node("Where", [node("Cast", [m], to=TensorProto.BOOL), node("Gather", [g["values"], idx], axis=0), zero])
    pieces = [f"{PREFIX}{group}/w{i}" for i in range(len(names))]
    if len(names) > 1:
        inits.append(numpy_helper.from_array(sizes, g["sizes"]))
        node("Split", [flat, g["sizes"]], pieces, axis=0)
    else:
        pieces = [flat]
    for piece, name in zip(pieces, names, strict=True):
        node("Reshape", [piece, name + SHAPE_SUFFIX], [name])
    return nodes, inits

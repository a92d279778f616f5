"""What each torch function does to units: the one table the unit tracer, the scoring net and the FLOPs count read.

:func:`op_of` looks an op up by name and gives its :class:`Kind` (docs/method.md, "Operations").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What an op does to the units of the activations it is given."""

    MOVE = "move"  # data movement: views, reshapes, permutations, slices, concatenation (applied to unit ids)
    SAME = "same"  # elementwise on one activation: activations, norms, dropout, casts (units unchanged)
    SPATIAL = "spatial"  # per-channel resampling of a channels-first map: pooling, interpolation
    REDUCE = "reduce"  # reductions over dims (must not be the units')
    BINARY = "binary"  # elementwise on two operands: add, sub, mul, div, maximum, minimum
    CONTRACT = "contract"  # a weight (or a second activation) contracted with the units: linear, conv, matmul
    SOFTMAX = "softmax"  # softmax of attention logits
    ATTENTION = "attention"  # scaled_dot_product_attention
    PAD = "pad"  # padding: the new entries carry no unit
    WHERE = "where"  # torch.where with a constant condition
    MASKED_FILL = "masked_fill"  # filled entries carry no unit
    SETITEM = "setitem"  # x[idx] = y
    COPY = "copy"  # x.copy_(y)
    FILL = "fill"  # x.zero_(), x.fill_(v): no units left
    CONST = "const"  # results that carry no units: shapes, comparisons, new tensors, Python numbers
    COMPOSITE = "composite"  # a function run as its decomposition (nn.MultiheadAttention's, glu)
    EMBED = "embed"  # a table lookup of ids computed from the input (token embeddings)


_MOVE = {
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis",
    "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous", "clone", "detach", "expand", "expand_as",
    "broadcast_to", "chunk", "split", "split_with_sizes", "tensor_split", "unbind", "__getitem__", "narrow", "select",
    "index_select", "gather", "take_along_dim", "roll", "flip", "fliplr", "flipud", "rot90", "t", ".T", ".mT",
    "repeat", "tile", "repeat_interleave", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
    "native_channel_shuffle", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "unfold",
    "fold", "diagonal", "as_strided", ".data",
}  # fmt: skip
_SAME = {
    # activations (the scoring net's identity, docs/method.md, Score)
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid",
    "hardtanh", "sigmoid", "tanh", "softplus", "softsign", "logsigmoid", "log_sigmoid", "prelu", "rrelu",
    "tanhshrink", "_threshold",
    "hardshrink", "softshrink", "threshold", "erf", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square",
    "pow", "abs", "sign", "sin", "cos", "reciprocal", "clamp", "clip", "clamp_min", "clamp_max", "neg", "negative",
    "positive", "round", "floor", "ceil", "trunc", "nan_to_num",
    # dropout, casts
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "feature_dropout",
    "to", "float", "double", "half", "bfloat16", "type", "type_as", "requires_grad_", "cpu", "cuda", "as_tensor",
    "asarray",
    # normalizations (a positive per-unit scale in the scoring net)
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize", "local_response_norm",
}  # fmt: skip
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d", "fractional_max_pool2d",
    "fractional_max_pool3d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
}  # fmt: skip
_REDUCE = {"mean", "sum", "nansum", "amax", "amin", "max", "min", "logsumexp", "std", "var", "norm", "median",
           "linalg_vector_norm"}
#: Reductions whose second argument is the order of a norm, not a dim: ``torch.norm(x, 2, 1)``.
_ORDER_FIRST = {"norm", "linalg_vector_norm"}
_BINARY = {"add", "sub", "rsub", "mul", "multiply", "div", "divide", "true_divide", "rdiv", "maximum", "minimum",
           "fmax", "fmin", "subtract"}
_CONTRACT = {"linear", "conv1d", "conv2d", "conv3d", "matmul", "mm", "bmm", "einsum"}
_CONST = {
    "size", "dim", "ndimension", "numel", ".shape", ".dtype", ".device", ".is_cuda", ".requires_grad", ".grad_fn",
    ".ndim", ".layout", "is_floating_point", "is_complex", "is_contiguous", "stride", "storage_offset",
    "element_size", "data_ptr", "__len__", "eq", "ne", "gt", "lt", "ge", "le", "isnan", "isinf", "isfinite",
    "logical_and", "logical_or", "logical_not", "logical_xor", "bool", "long", "int", "argmax", "argmin", "argsort",
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like", "full_like",
    "empty_like", "rand_like", "randn_like", "randint_like", "item", "tolist", "numpy", "__bool__", "__int__",
    "__float__", "__index__", "__format__", "__repr__", "__hash__", "__array__", "__reduce_ex__", "__deepcopy__",
    "register_hook", "retain_grad", "_assert", "get_device", "__contains__", "__eq__", "__ne__", "__lt__", "__gt__",
    "__le__", "__ge__", "__and__", "__or__", "__invert__", "__xor__", "has_names", "is_nonzero", "equal", "allclose",
}  # fmt: skip
#: Constants made from a tensor's shape, dtype and device alone (``torch.zeros_like(x)``): they carry neither units
#: nor anything computed from the input's values.
SHAPE_ONLY = {"new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "full_like", "empty_like",
              "rand_like", "randn_like", "randint_like"}
_OTHER = {
    "softmax": Kind.SOFTMAX, "log_softmax": Kind.SOFTMAX, "softmin": Kind.SOFTMAX,
    "scaled_dot_product_attention": Kind.ATTENTION,
    "pad": Kind.PAD, "constant_pad_nd": Kind.PAD, "where": Kind.WHERE, "masked_fill": Kind.MASKED_FILL,
    "__setitem__": Kind.SETITEM, "copy": Kind.COPY, "zero": Kind.FILL, "fill": Kind.FILL,
    "multi_head_attention_forward": Kind.COMPOSITE, "glu": Kind.COMPOSITE, "addcmul": Kind.COMPOSITE,
    "addcdiv": Kind.COMPOSITE, "addmm": Kind.COMPOSITE, "baddbmm": Kind.COMPOSITE,
    "embedding": Kind.EMBED,
}  # fmt: skip

_DUNDER = {
    "__add__": "add", "__radd__": "add", "__iadd__": "add", "__sub__": "sub", "__rsub__": "rsub", "__isub__": "sub",
    "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul", "__truediv__": "div", "__rtruediv__": "rdiv",
    "__itruediv__": "div", "__div__": "div", "__rdiv__": "rdiv", "__matmul__": "matmul", "__rmatmul__": "rmatmul",
    "__neg__": "neg", "__pow__": "pow", "__abs__": "abs", "__pos__": "positive",
}  # fmt: skip


#: Casts whose other tensor argument gives only a dtype (and device): ``x.to(y)``, ``x.type_as(y)``.
CASTS = ("to", "type_as")


@dataclass(frozen=True)
class Op:
    """A torch function as the table sees it: its base name, its kind (None: unknown) and whether it is in place."""

    name: str
    kind: Kind | None
    inplace: bool = False


def func_name(func: object) -> str:
    """The name a torch function, method or tensor property is known by (``.shape`` for a property)."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return "." + getattr(owner, "__name__", "?")
    return name


def op_of(func: object) -> Op:
    """The table's entry for ``func``."""
    name = func_name(func)
    inplace = name in ("__iadd__", "__isub__", "__imul__", "__itruediv__")
    if name in _DUNDER:
        name = _DUNDER[name]
    elif name.endswith("_") and not name.startswith("_") and name[:-1]:
        name, inplace = name[:-1], True
    if name == "rmatmul":
        return Op("rmatmul", Kind.CONTRACT, inplace)
    if name.startswith(".") and name not in _MOVE:
        return Op(name, Kind.CONST, inplace)  # a property: shape, dtype, is_nested, ...
    for names, kind in ((_MOVE, Kind.MOVE), (_SAME, Kind.SAME), (_SPATIAL, Kind.SPATIAL), (_REDUCE, Kind.REDUCE),
                        (_BINARY, Kind.BINARY), (_CONTRACT, Kind.CONTRACT), (_CONST, Kind.CONST)):
        if name in names:
            return Op(name, kind, inplace)
    return Op(name, _OTHER.get(name), inplace)


#: Max-style ops and the mean-style op that stands in for them in the scoring net (docs/method.md, Score).
MAX_LIKE = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
            "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
            "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
            "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d", "fractional_max_pool2d",
            "fractional_max_pool3d"}
#: Data movement that joins a list of tensors (the first argument).
CONCATS = {"cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"}
NORMS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"}


def reduced_dims(op: Op, args: tuple, kwargs: dict, ndim: int) -> list[int]:
    """The dims a reduction runs over (all of them when none is given)."""
    dims = kwargs.get("dim", kwargs.get("axis"))
    if dims is None:
        for a in args[2:4] if op.name in _ORDER_FIRST else args[1:3]:
            if isinstance(a, int) and not isinstance(a, bool) or isinstance(a, (tuple, list)) and a and all(
                    isinstance(d, int) for d in a):
                dims = a
                break
    if dims is None:
        return list(range(ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted({d % ndim for d in dims})

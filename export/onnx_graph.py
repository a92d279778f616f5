"""ONNX export of a masked model (masks multiplied in) and its three weight encodings: dense, sparse, packed.

``sparse`` uses ONNX's ``sparse_initializer`` where it is smaller; ``packed`` stores nonzero values and a 1-bit
mask decoded in the graph (``pwmpr.export.packing``). The ``metadata_props`` carry ``pwmpr_version``,
``pwmpr_density``, ``pwmpr_layer_density`` (JSON), ``pwmpr_masks_sha256``, ``pwmpr_encoding`` and ``pwmpr``
(the export metadata as JSON, read by ``weights_from_onnx`` and ``pwmpr inspect``).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from pwmpr.errors import PwmprError
from pwmpr.export import packing
from pwmpr.probe import input_dtype_of

ENCODINGS = ("dense", "sparse", "packed")
MIN_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
META_KEY = "pwmpr"


def max_opset() -> int:
    """The highest default-domain opset the installed onnx knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> int:
    """``opset`` if pwmpr can export at it; PwmprError otherwise."""
    top = max_opset()
    if not MIN_OPSET <= int(opset) <= top:
        raise PwmprError(f"--opset must be between {MIN_OPSET} and {top} (the installed onnx), got {opset}")
    return int(opset)


def export_dense(model: torch.nn.Module, input_shape: tuple[int, ...], opset: int = MIN_OPSET) -> onnx.ModelProto:
    """``torch.onnx.export`` (dynamo) of ``model`` with a dynamic batch (and sequence length where allowed), one proto.

    The masks must already be multiplied into the weights.
    """
    model = model.eval()
    # batch 2: torch.export specialises a batch of 1; token ids for a model that takes them
    example = torch.zeros((2, *input_shape), dtype=input_dtype_of(model))
    opset = check_opset(opset)
    # A forward that fixes its sequence length (a position table added whole) comes out with that length fixed.
    dynamic = sequence_dims(model, input_shape)
    try:
        return _dynamo_export(model, example, opset, dynamic)
    except Exception as dynamo_error:  # noqa: BLE001 - the exporter raises many kinds; the fallback decides
        # Some graphs the dynamo exporter cannot convert (5-D attention, a view of a transposed tensor) the
        # TorchScript exporter can; the result is checked in onnxruntime like any other.
        try:
            return _torchscript_export(model, example, opset, dynamic)
        except Exception as script_error:  # noqa: BLE001
            raise PwmprError(f"torch.onnx cannot export this model: dynamo: {_first_line(dynamo_error)}; "
                             f"TorchScript: {_first_line(script_error)}") from None


def _first_line(exc: BaseException) -> str:
    """The root cause of ``exc`` (its ``raise ... from`` chain followed down) as one line: type and first line,
    colour codes removed."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(root)).splitlines() if line.strip()]
    return f"{type(root).__name__}: {lines[0] if lines else ''}"[:300]


def _torchscript_export(model: torch.nn.Module, example: torch.Tensor, opset: int, dynamic: tuple[dict, ...]
                        ) -> onnx.ModelProto:
    import io

    axes = {0: "batch", **({1: "seq"} if 1 in dynamic[0] else {})}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "pwmpr (torch.onnx TorchScript)"
    return proto


def is_sequence_model(model: torch.nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether ``model`` reads a sequence of token ids (batch, seq), whose length may vary up to ``input_shape``."""
    return not input_dtype_of(model).is_floating_point and len(input_shape) == 1


def sequence_dims(model: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[dict, ...]:
    """The exported input's dynamic dims: the batch, and the sequence (1 to its training length) of token ids
    when that length is 2 or more."""
    if not is_sequence_model(model, input_shape) or input_shape[0] < 2:
        return ({0: "batch"},)
    from torch.export import Dim

    return ({0: Dim("batch"), 1: Dim("seq", max=input_shape[0])},)


def dynamic_sequence(proto: onnx.ModelProto) -> bool:
    """Whether the graph's input takes any sequence length (its second dim is named, not fixed)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 2 and bool(dims[1].dim_param)


def _dynamo_export(model: torch.nn.Module, example: torch.Tensor, opset: int, dynamic: tuple[dict, ...]
                   ) -> onnx.ModelProto:
    # The exporter's deprecation warnings and onnxscript's note on converting to opsets above 18 say nothing
    # the user can act on; the result is checked in onnxruntime anyway.
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, external_data=False, opset_version=opset,
                dynamic_shapes=dynamic, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
            )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    proto.producer_name = "pwmpr (torch.onnx dynamo)"
    # The exporter annotates the graph, every node and every value with FX debug data (the ExportedProgram
    # signature, stack traces with local paths): larger than many sparse weights, and nothing a user needs.
    graph = proto.graph
    for item in (graph, *graph.node, *graph.initializer, *graph.value_info, *graph.input, *graph.output):
        del item.metadata_props[:]
    del graph.value_info[:]  # intermediate shapes: optional, re-inferred by every runtime
    for node in graph.node:
        node.doc_string = ""
    return proto


def _consumers(graph: onnx.GraphProto) -> dict[str, set[str]]:
    ops: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            ops.setdefault(name, set()).add(node.op_type)
    return ops


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def locate(graph: onnx.GraphProto, weights: Mapping[str, np.ndarray]) -> dict[str, tuple[str, bool]]:
    """Where each masked weight is stored in an exported graph: ``{weight: (initializer name, transposed)}``.

    Renamed weights (a Linear on 3-D input becomes a MatMul on ``val_<n>``) are found by value; others are left out.
    """
    inits = {t.name: t for t in graph.initializer}
    found = {name: (name, False) for name in weights if name in inits}
    missing = [name for name in weights if name not in found]
    if missing:
        by_value = {}
        for t in graph.initializer:
            if t.name not in found and t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
                array = numpy_helper.to_array(t)
                by_value.setdefault((array.shape, array.dtype.str, array.tobytes()), t.name)
        for name in missing:
            w = np.asarray(weights[name])
            for transposed, candidate in ((False, w), (True, w.T)) if w.ndim == 2 else ((False, w),):
                c = np.ascontiguousarray(candidate)
                hit = by_value.get((c.shape, c.dtype.str, c.tobytes()))
                if hit is not None:
                    found[name] = (hit, transposed)
                    break
    return {name: found[name] for name in weights if name in found}


def encode(dense: onnx.ModelProto, encoding: str,
           weights: Mapping[str, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A copy of ``dense`` with the masked ``weights`` stored in ``encoding`` where that makes them smaller.

    Returns:
        ``(model, info)``: ``info["layers"]`` maps each masked weight found to the encoding it got,
        ``info["tensors"]`` each renamed weight to ``[initializer name, transposed]``, and ``info["groups"]`` lists
        the packed groups (see ``pwmpr.export.packing``).
    """
    if encoding not in ENCODINGS:
        raise PwmprError(f"--onnx-weights must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    model = onnx.ModelProto()
    model.CopyFrom(dense)
    graph = model.graph
    tensors = locate(graph, weights)
    stored = {init: "dense" for init, _ in tensors.values()}  # initializer -> encoding
    renamed = {w: [init, t] for w, (init, t) in tensors.items() if (init, t) != (w, False)}
    info: dict[str, Any] = {"layers": {}, "tensors": renamed, "groups": []}
    consumers = _consumers(graph)
    keep: list[TensorProto] = []
    to_pack: dict[str, list[tuple[str, np.ndarray]]] = {}  # dtype -> [(initializer, array)]
    for tensor in graph.initializer:
        if encoding == "dense" or tensor.name not in stored or "Identity" in consumers.get(tensor.name, ()):
            keep.append(tensor)
            continue
        array = numpy_helper.to_array(tensor)
        n, k, itemsize = array.size, int(np.count_nonzero(array)), array.dtype.itemsize
        if encoding == "sparse" and (8 + itemsize) * k < itemsize * n:  # INT64 index + value per nonzero
            flat = array.reshape(-1)
            idx = np.flatnonzero(flat).astype(np.int64)
            values = numpy_helper.from_array(flat[idx], tensor.name)
            graph.sparse_initializer.append(helper.make_sparse_tensor(values, numpy_helper.from_array(idx, ""),
                                                                      list(array.shape)))
            stored[tensor.name] = "sparse"
        elif encoding == "packed" and packing.worth_packing(n, k, itemsize):
            to_pack.setdefault(array.dtype.name, []).append((tensor.name, array))
            stored[tensor.name] = "packed"
        else:
            keep.append(tensor)
    new_nodes: list = []
    added: set[str] = set()
    for group in _groups(to_pack):
        number = len(info["groups"])
        nodes, extra = packing.decode_group(number, [n for n, _ in group], [w for _, w in group], default_opset(model))
        new_nodes += nodes
        keep += [t for t in extra if t.name not in added]  # the shared pwmpr.* constants once
        added.update(t.name for t in extra)
        info["groups"].append({**packing.group_names(number), "layers": [[n, list(w.shape)] for n, w in group]})
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if new_nodes:
        # Decode nodes go first: their outputs replace initializers, so the graph stays topologically sorted.
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + old)
    info["layers"] = {w: stored[init] for w, (init, _) in tensors.items()}
    return model, info


def _groups(to_pack: dict[str, list[tuple[str, np.ndarray]]]) -> list[list[tuple[str, np.ndarray]]]:
    """Split same-dtype weights into runs of at most ``GROUP_MAX_ELEMENTS`` entries (one weight may exceed it)."""
    groups: list[list[tuple[str, np.ndarray]]] = []
    for items in to_pack.values():
        current: list[tuple[str, np.ndarray]] = []
        for name, w in items:
            if current and sum(x.size for _, x in current) + w.size > packing.GROUP_MAX_ELEMENTS:
                groups.append(current)
                current = []
            current.append((name, w))
        groups.append(current)
    return groups


def set_metadata(model: onnx.ModelProto, meta: dict[str, Any], encoding: str, info: dict[str, Any]) -> None:
    """Write pwmpr's ``metadata_props`` (version, density, per-layer density, masks sha256, encoding, full JSON)."""
    full = {k: v for k, v in meta.items() if k not in ("layer_density", "layer_shapes")}
    full["onnx_weights"] = {"encoding": encoding, **info, "bitorder": packing.BITORDER}
    props = {
        "pwmpr_version": str(meta["pwmpr_version"]),
        "pwmpr_density": repr(float(meta["density"])),
        "pwmpr_layer_density": json.dumps(meta["layer_density"]),
        "pwmpr_masks_sha256": meta["masks_sha256"],
        "pwmpr_encoding": encoding,
        META_KEY: json.dumps(full),
    }
    helper.set_model_props(model, props)


def read_metadata(model: onnx.ModelProto, source: str = "model") -> dict[str, Any]:
    """The pwmpr JSON metadata of an ONNX model; PwmprError when it has none or it is unreadable."""
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise PwmprError(f"{source} has no pwmpr metadata: it was not written by pwmpr export")
    try:
        meta = json.loads(props[META_KEY])
    except json.JSONDecodeError:
        raise PwmprError(f"{source} has unreadable pwmpr metadata") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("onnx_weights"), dict):
        raise PwmprError(f"{source} has incomplete pwmpr metadata (no onnx_weights entry)")
    return meta


def weights_from_onnx(model: onnx.ModelProto, source: str = "model") -> dict[str, np.ndarray]:
    """The dense masked weights of a pwmpr ONNX file by weight name, in the model's orientation, whatever their
    encoding (sparse densified, packed decoded)."""
    meta = read_metadata(model, source)
    stored = meta["onnx_weights"]
    dense = {t.name: t for t in model.graph.initializer}
    sparse = {s.values.name: s for s in model.graph.sparse_initializer}
    decoded: dict[str, np.ndarray] = {}  # initializer name -> array
    out: dict[str, np.ndarray] = {}
    try:
        for group in stored.get("groups", []):
            names = [name for name, _ in group["layers"]]
            arrays = packing.unpack_group(numpy_helper.to_array(dense[group["values"]]),
                                          numpy_helper.to_array(dense[group["bits"]]),
                                          [shape for _, shape in group["layers"]], f"{source}: {group['values']}")
            decoded.update(zip(names, arrays, strict=True))
        tensors = stored.get("tensors", {})
        for name, how in stored.get("layers", {}).items():
            init, transposed = tensors.get(name, (name, False))
            if how == "dense":
                array = numpy_helper.to_array(dense[init])
            elif how == "sparse":
                array = densify_sparse(sparse[init])
            elif how == "packed":
                array = decoded[init]
            else:
                raise PwmprError(f"{source}: weight {name!r} has unknown encoding {how!r}")
            out[name] = array.T if transposed else array
    except KeyError as exc:
        raise PwmprError(f"{source}: a tensor named in its pwmpr metadata is missing: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PwmprError(f"{source}: malformed pwmpr metadata: {exc}") from None
    return out


def densify_sparse(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A dense numpy array from a SparseTensorProto with linear (``[nnz]``) INT64 indices."""
    values = numpy_helper.to_array(sparse.values)
    idx = numpy_helper.to_array(sparse.indices)
    dims = tuple(sparse.dims)
    if idx.ndim != 1:
        raise PwmprError(f"sparse initializer {sparse.values.name!r}: only linear indices are supported")
    flat = np.zeros(int(np.prod(dims, dtype=np.int64)), dtype=values.dtype)
    flat[idx] = values
    return flat.reshape(dims)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each operator type the main graph holds."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))

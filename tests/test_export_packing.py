"""Bit packing, the in-graph decode, the sparse/packed encodings and the output checks of `pwmpr export`."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pwmpr.errors import PwmprError
from pwmpr.export import onnx_graph, packing, validate


def _sparse(shape, density, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(dtype)
    return w * (rng.random(shape) < density)


def _gemm_model(weights: dict[str, np.ndarray], opset: int = 18) -> onnx.ModelProto:
    """x -> Gemm(W1) -> Gemm(W2) ...: each weight (out, in) feeds one Gemm with transB, like an exported Linear."""
    nodes, inits, x = [], [], "x"
    first_in = next(iter(weights.values())).shape[1]
    for i, (name, w) in enumerate(weights.items()):
        out = f"y{i}"
        nodes.append(helper.make_node("Gemm", [x, name], [out], transB=1))
        inits.append(numpy_helper.from_array(w, name))
        x = out
    last_out = list(weights.values())[-1].shape[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", first_in])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["b", last_out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _decoded_by_onnxruntime(model: onnx.ModelProto, names) -> dict[str, np.ndarray]:
    """Run the graph with every optimisation off, exposing the decoded weights as outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    outs = sess.run(list(names), {"x": np.zeros((1, width), np.float32)})
    return dict(zip(names, outs, strict=True))


# -- bit packing ------------------------------------------------------------------------------
def test_bit_order_is_little_endian_c_order():
    # Element i is bit i % 8 of byte i // 8: element 0 -> 0x01, element 9 -> byte 1 bit 1 = 0x02.
    mask = np.zeros(10, bool)
    mask[[0, 9]] = True
    assert packing.pack_bits(mask).tolist() == [0x01, 0x02]
    grid = torch.tensor([[True, False, False], [False, False, True]])  # C order: elements 0 and 5
    assert packing.pack_bits(grid).tolist() == [0b00100001]
    assert np.array_equal(packing.unpack_bits(np.array([0b00100001], np.uint8), (2, 3)), grid.numpy())


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5, 3, 3), (300, 784)])
def test_pack_unpack_round_trip(shape):
    mask = np.random.default_rng(1).random(shape) < 0.3
    bits = packing.pack_bits(mask)
    assert bits.dtype == np.uint8 and bits.size == (mask.size + 7) // 8
    assert np.array_equal(packing.unpack_bits(bits, shape), mask)
    assert np.array_equal(np.unpackbits(bits, count=mask.size, bitorder="little").reshape(shape), mask)


@pytest.mark.parametrize(
    ("bits", "shape", "message"),
    [
        (np.zeros(2, np.uint8), (8,), "has 2 bytes but shape [8] needs 1"),
        (np.zeros(1, np.int8), (8,), "must be a 1-D uint8"),
        (np.zeros((1, 1), np.uint8), (8,), "must be a 1-D uint8"),
        (np.array([0x80], np.uint8), (7,), "padding bits set"),
        (np.zeros(1, np.uint8), ("a",), "bad mask shape"),
    ],
)
def test_unpack_refuses_inconsistent_bits(bits, shape, message):
    with pytest.raises(PwmprError, match=message.replace("[", r"\[").replace("]", r"\]")):
        packing.unpack_bits(bits, shape)


def test_masks_digest_depends_on_names_shapes_and_bits_only():
    a = {"b": torch.tensor([True, False]), "a": torch.ones(2, 2, dtype=torch.bool)}
    same = {"a": np.ones((2, 2), bool), "b": np.array([True, False])}
    assert packing.masks_digest(a) == packing.masks_digest(same)
    assert packing.masks_digest(a) != packing.masks_digest({**same, "b": np.array([False, True])})
    assert packing.masks_digest(a) != packing.masks_digest({**same, "a": np.ones((4,), bool)})


# -- the packed group and its in-graph decode ---------------------------------------------------
def test_group_round_trip_with_empty_and_ragged_layers():
    weights = [_sparse((5, 3), 0.4, 0), np.zeros((2, 3), np.float32), _sparse((4, 7), 0.9, 1)]
    values, bits = packing.pack_group(weights)
    assert values[-1] == 0 and values.size == sum(int(np.count_nonzero(w)) for w in weights) + 1
    decoded = packing.unpack_group(values, bits, [w.shape for w in weights])
    assert all(np.array_equal(d, w) for d, w in zip(decoded, weights, strict=True))
    with pytest.raises(PwmprError, match="packed values"):
        packing.unpack_group(values[:-1], bits, [w.shape for w in weights])


@pytest.mark.parametrize("shapes", [[(64, 8)], [(64, 8), (37, 64), (13, 37)], [(9, 7)]])
def test_onnxruntime_decodes_packed_weights_to_exactly_the_dense_ones(shapes):
    weights = {}
    for i, shape in enumerate(shapes):
        weights[f"layer{i}.weight"] = _sparse(shape, 0.2, i)
    weights[f"layer{len(shapes) - 1}.weight"][-1] = 0  # trailing zeros: indices run past the last value
    dense = _gemm_model(weights)
    packed, info = onnx_graph.encode(dense, "packed", weights)
    assert set(info["layers"].values()) == {"packed"} and len(info["groups"]) == 1
    assert not {t.name for t in packed.graph.initializer} & set(weights)  # weights exist only as decode outputs
    onnx.checker.check_model(packed, full_check=True)
    decoded = _decoded_by_onnxruntime(packed, list(weights))
    assert all(np.array_equal(decoded[n], w) and decoded[n].dtype == w.dtype for n, w in weights.items())


def test_onnxruntime_folds_the_decode_away():
    weights = {"a.weight": _sparse((256, 128), 0.1, 0), "b.weight": _sparse((10, 256), 0.1, 1)}
    dense = _gemm_model(weights)
    packed, _ = onnx_graph.encode(dense, "packed", weights)
    providers = [validate.CPU_EP]
    folded = validate.folded_op_counts(packed.SerializeToString(), providers)
    assert folded == validate.folded_op_counts(dense.SerializeToString(), providers) == {"Gemm": 2}
    assert onnx_graph.op_counts(packed)["CumSum"] == 1  # one decode for the whole group, before folding
    x = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
    run = [validate.open_session(m.SerializeToString(), providers).run(x) for m in (dense, packed)]
    assert np.array_equal(run[0], run[1])


def test_packed_file_is_about_density_plus_one_bit():
    w = _sparse((512, 1024), 0.1, 0)
    dense = _gemm_model({"w": w})
    packed, _ = onnx_graph.encode(dense, "packed", {"w": w})
    ratio = packed.ByteSize() / dense.ByteSize()
    assert ratio <= 0.1 + 1 / 32 + 0.005, ratio


def test_weights_where_packing_does_not_pay_stay_dense():
    weights = {"full.weight": _sparse((64, 32), 1.0, 0), "small.weight": _sparse((2, 64), 0.9, 1)}
    packed, info = onnx_graph.encode(_gemm_model(weights), "packed", weights)
    assert info["layers"] == {"full.weight": "dense", "small.weight": "dense"} and info["groups"] == []
    assert onnx_graph.op_counts(packed) == {"Gemm": 2}


def test_weights_the_exporter_renamed_and_transposed_are_found_by_value():
    # A Linear on a 3-D input exports as MatMul(x, W^T) with W^T under a generated name (e.g. ViT blocks).
    w = _sparse((48, 32), 0.1, 0)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "val_7"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 5, 48])],
                              [numpy_helper.from_array(np.ascontiguousarray(w.T), "val_7")])
    dense = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    packed, info = onnx_graph.encode(dense, "packed", {"blocks.0.fc1.weight": w, "absent.weight": w * 2})
    assert info["tensors"] == {"blocks.0.fc1.weight": ["val_7", True]}
    assert info["layers"] == {"blocks.0.fc1.weight": "packed"}
    onnx_graph.set_metadata(packed, {"pwmpr_version": "0", "density": 0.1, "layer_density": {},
                                     "masks_sha256": ""}, "packed", info)
    assert np.array_equal(onnx_graph.weights_from_onnx(packed)["blocks.0.fc1.weight"], w)  # model orientation
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    outs = [validate.open_session(m.SerializeToString(), [validate.CPU_EP]).run(x) for m in (dense, packed)]
    assert np.array_equal(outs[0], outs[1])


def test_packed_needs_opset_18():
    with pytest.raises(PwmprError, match="opset >= 18"):
        packing.decode_group(0, ["w"], [_sparse((8, 8), 0.1)], 17)


# -- sparse_initializer -----------------------------------------------------------------------
def test_sparse_encoding_uses_int64_linear_indices_where_smaller():
    weights = {"sparse.weight": _sparse((64, 32), 0.1, 0), "denser.weight": _sparse((10, 64), 0.5, 1)}
    dense = _gemm_model(weights)
    model, info = onnx_graph.encode(dense, "sparse", weights)
    assert info["layers"] == {"sparse.weight": "sparse", "denser.weight": "dense"}  # 12 B/nnz pays below 1/3
    (sp,) = model.graph.sparse_initializer
    assert sp.values.name == "sparse.weight" and sp.indices.data_type == TensorProto.INT64
    assert list(sp.indices.dims) == [int(np.count_nonzero(weights["sparse.weight"]))]
    assert np.array_equal(onnx_graph.densify_sparse(sp), weights["sparse.weight"])
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    outs = [validate.open_session(m.SerializeToString(), [validate.CPU_EP]).run(x) for m in (dense, model)]
    assert np.array_equal(outs[0], outs[1])


def test_encode_refuses_unknown_encoding():
    with pytest.raises(PwmprError, match="--onnx-weights must be one of dense, sparse, packed"):
        onnx_graph.encode(_gemm_model({"w": _sparse((4, 4), 0.5)}), "zip", {})


# -- output agreement and providers -------------------------------------------------------------
def test_compare_tolerance_scales_with_the_largest_output():
    ref = np.array([[100.0, 1.0], [0.5, 0.2]], np.float32)
    tol = 1e-5 * 100.0
    assert validate.measure_agreement(ref, ref + tol * 0.9).ok
    assert not validate.measure_agreement(ref, ref + np.array([[tol * 1.5, 0], [0, 0]], np.float32)).ok
    small = np.array([[0.5, 0.2]], np.float32)
    assert validate.measure_agreement(small, small + 0.9e-5).tolerance == pytest.approx(1e-5)


def test_compare_requires_the_same_top1_only_where_the_margin_is_clear():
    ref = np.array([[1.0, 1.0 + 1e-6], [0.0, 1.0]], np.float32)  # row 0: a tie within tolerance
    swapped = np.array([[1.0 + 1e-6, 1.0], [0.0, 1.0]], np.float32)
    agreement = validate.measure_agreement(ref, swapped)
    assert agreement.ok and agreement.n_top1_checked == 1
    flipped = np.array([[1.0, 1.0 + 1e-6], [1.0, 0.0]], np.float32)
    assert validate.measure_agreement(ref, flipped).n_top1_mismatch == 1


def _cancelling_model() -> torch.nn.Module:
    """Two rows of 1e6-sized weights whose difference is the output: float32 rounding alone moves it by ~0.1."""
    first = torch.nn.Linear(2, 2, bias=False)
    second = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1e6, 1e6], [1e6 + 1.0, 1e6 - 1.0]]))
        second.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return torch.nn.Sequential(first, second).eval()


def test_float32_sensitivity_is_tiny_for_a_well_conditioned_model_and_large_for_cancellation():
    x = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    assert validate.float32_sensitivity(plain, x) < 0.1 * validate.RTOL
    # 1e6 * |x| * 2**-24 per rounding, about 0.06 * |x|: thousands of times the plain tolerance.
    assert validate.float32_sensitivity(_cancelling_model(), x) > 100 * validate.RTOL


def test_export_agreement_widens_to_the_models_own_float32_spread_and_no_further():
    from pwmpr.export.pipeline import _Agreement

    x = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    model = _cancelling_model()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    agreement = _Agreement(model, x, ref)
    assert validate.measure_agreement(ref, ref + 0.01).ok is False  # the plain tolerance refuses rounding-sized noise
    assert agreement(ref + 0.01).ok and agreement.sensitivity > 0.01
    assert not agreement(ref + 10 * agreement.sensitivity).ok  # a real difference still fails
    torch.manual_seed(0)
    well = torch.nn.Linear(2, 2)
    with torch.no_grad():
        well_ref = well(torch.from_numpy(x)).numpy()
    assert not _Agreement(well, x, well_ref)(well_ref + 0.01).ok


def test_provider_cuda_is_an_error_unless_cuda_was_used(monkeypatch):
    validate.check_provider("auto", [validate.CPU_EP])
    validate.check_provider("cuda", [validate.CUDA_EP, validate.CPU_EP])
    with pytest.raises(PwmprError, match="did not use CUDA"):
        validate.check_provider("cuda", [validate.CPU_EP])
    monkeypatch.setattr(ort, "get_available_providers", lambda: [validate.CPU_EP])
    with pytest.raises(PwmprError, match="no CUDA provider"):
        validate.requested_providers("cuda")
    assert validate.requested_providers("auto") == [validate.CPU_EP]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [validate.CUDA_EP, validate.CPU_EP])
    assert validate.requested_providers("auto") == [validate.CUDA_EP, validate.CPU_EP]
    assert validate.requested_providers("cpu") == [validate.CPU_EP]

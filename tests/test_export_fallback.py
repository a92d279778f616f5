"""The ONNX export falls back to the TorchScript exporter where the dynamo exporter fails, and says why in one line
when both do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwmpr.errors import PwmprError
from pwmpr.export import onnx_graph


class Attention5D(nn.Module):
    """Tokens in 2 groups of 2 heads: scaled_dot_product_attention on 5-D q, k and v, as Twins' and NesT's
    attention calls it (the dynamo exporter converts only 4-D attention)."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.qkv, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, classes)

    def forward(self, x):  # (N, T, dim), T even
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, 2, t // 2, 3, 2, d // 2).permute(3, 0, 1, 4, 2, 5).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)  # (N, groups, heads, T / 2, dim / 2)
        return self.head(o.permute(0, 1, 3, 2, 4).reshape(n, t, d).mean(1))


def test_a_graph_the_dynamo_exporter_refuses_is_exported_by_torchscript_and_runs_in_onnxruntime():
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Attention5D().eval()
    with pytest.raises(Exception):  # noqa: B017 - the premise: dynamo cannot (any of its error types)
        onnx_graph._dynamo_export(model, torch.zeros(2, 4, 8), onnx_graph.MIN_OPSET, ({0: "batch"},))
    proto = onnx_graph.export_dense(model, (4, 8))
    assert proto.producer_name == "pwmpr (torch.onnx TorchScript)"
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 4, 8)  # another batch size than the export's example: the batch stays dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(session.run(None, {onnx_graph.INPUT_NAME: x.numpy()})[0], expected, atol=1e-5)


def test_a_model_neither_exporter_converts_is_refused_in_one_line_naming_both(monkeypatch):
    def dynamo(*args, **kwargs):  # as torch.onnx raises: a wrapper whose root cause says what went wrong
        try:
            raise AssertionError("\x1b[31monly 4D query, key, and value are supported\x1b[0m\nmore detail")
        except AssertionError as cause:
            raise RuntimeError("Failed to convert.\n(Refer to the full stack trace above)") from cause

    def torchscript(*args, **kwargs):
        raise ValueError("cannot view a tensor")

    monkeypatch.setattr(onnx_graph, "_dynamo_export", dynamo)
    monkeypatch.setattr(onnx_graph, "_torchscript_export", torchscript)
    with pytest.raises(PwmprError) as info:
        onnx_graph.export_dense(nn.Linear(2, 2), (2,))
    message = str(info.value)
    assert "\n" not in message
    assert message == ("torch.onnx cannot export this model: dynamo: AssertionError: only 4D query, key, and value "
                       "are supported; TorchScript: ValueError: cannot view a tensor")


def test_a_graph_onnxruntime_cannot_run_on_the_validation_batch_is_a_failure_line_not_a_traceback():
    import io

    import onnx

    from pwmpr.export import pipeline

    model = nn.Linear(4, 3).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(2, 4),), buffer, dynamo=False, input_names=["input"])  # batch fixed at 2
    x = np.zeros((5, 4), dtype=np.float32)
    with torch.no_grad():
        agreement = pipeline._Agreement(model, x, model(torch.from_numpy(x)).numpy())
    row, _, failures = pipeline._check_encoding("dense", onnx.load_from_string(buffer.getvalue()),
                                                ["CPUExecutionProvider"], "cpu", x, agreement, runs=1)
    assert len(failures) == 1 and failures[0].startswith("dense: onnxruntime cannot run it on the validation inputs: ")
    assert "\n" not in failures[0] and row["size_bytes"] > 0

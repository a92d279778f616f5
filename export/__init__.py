"""Export (pipeline step 6, installed as ``pwmpr.export``): safetensors + validated ONNX, and ``pwmpr inspect``.

``safetensors_io`` (model and mask files, ``pwmpr.load``), ``packing`` (mask bits and the in-graph decode),
``onnx_graph`` (dynamo export, TorchScript where dynamo fails, and the dense / sparse / packed encodings),
``validate`` (onnxruntime vs PyTorch), ``pipeline`` (``export_run``: everything, validated, moved into place at
the end), ``inspect``.
Nothing here is imported by ``import pwmpr``: onnx and onnxruntime load only when an export runs.
"""

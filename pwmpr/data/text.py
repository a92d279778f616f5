"""Byte-level text for next-token language modelling: ``pydoc-text`` and ``text:PATH`` (docs/method.md, Language
models).

``pydoc-text`` is CPython's ``pydoc_data/topics.py``; ``text:PATH`` a UTF-8 file (paragraphs are documents) or a
folder (files are documents). Tokens are bytes (vocabulary 256); splits are by document (SHA-256 of its name mod
10: 0 test, 1 validation), cut into windows of ``CONTEXT`` bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from pwmpr.data import DATASETS, DataBundle, TensorSplit, data_path
from pwmpr.errors import PwmprError

CONTEXT = 128  # bytes per sample (the model's context)
VOCAB = 256  # byte tokens
SPLITS = ("train", "val", "test")


def split_of(name: str) -> str:
    """The split of a document named ``name``: test when sha256(name) is 0 mod 10, validation when 1, else train."""
    bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def split_documents(docs: dict[str, bytes]) -> dict[str, bytes]:
    """Each split's documents (by :func:`split_of` of their names) joined in sorted name order, one newline apart."""
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    for name in sorted(docs):
        parts[split_of(name)].append(docs[name])
    return {s: b"\n".join(p) for s, p in parts.items()}


def windows(stream: bytes, context: int = CONTEXT) -> TensorSplit:
    """Non-overlapping windows of ``context`` bytes of ``stream`` (x) and, per byte, the byte after it (y): int64
    tensors of shape (N, context)."""
    n = max(0, (len(stream) - 1) // context)
    if n == 0:
        empty = torch.zeros((0, context), dtype=torch.int64)
        return TensorSplit(empty, empty.clone())
    data = torch.frombuffer(bytearray(stream[: n * context + 1]), dtype=torch.uint8).long()
    x = data[: n * context].view(n, context)
    y = data[1 : n * context + 1].view(n, context)
    return TensorSplit(x.clone(), y.clone())


def text_bundle(name: str, docs: dict[str, bytes], context: int = CONTEXT) -> DataBundle:
    """The byte-level language-model bundle of ``docs`` (document name -> bytes), split by document."""
    streams = split_documents(docs)
    splits = {s: windows(streams[s], context) for s in SPLITS}
    short = [s for s in SPLITS if len(splits[s]) == 0]
    if short:
        counts = ", ".join(f"{s} {len(streams[s])} bytes" for s in SPLITS)
        raise PwmprError(f"text {name}: the {' and '.join(short)} split(s) hold less than one window of {context + 1} "
                         f"bytes ({counts} over {len(docs)} documents, split by document); give a longer text with "
                         "more documents (paragraphs between blank lines, or files in a folder)")
    return DataBundle(name, VOCAB, (context,), "gpt-mini", splits["train"], splits["val"], splits["test"],
                      input_dtype=torch.int64, val_fixed=True)


@DATASETS.register("pydoc-text")
def pydoc_text(data_dir: str | None = None, context: int = CONTEXT) -> DataBundle:
    """CPython's pydoc topics (offline English prose), byte tokens, split by topic."""
    from pydoc_data.topics import topics

    return text_bundle("pydoc-text", {k: v.encode("utf-8") for k, v in topics.items()}, context)


@DATASETS.register("text")
def text(data_dir: str | None = None, path: str = "", context: int = CONTEXT) -> DataBundle:
    """``text:PATH``: a UTF-8 file (paragraphs are documents) or a folder (files are documents)."""
    p = data_path(path, data_dir)
    if not path or not p.exists():
        raise PwmprError(f"text file not found: {path or '(empty path)'}; use --data text:PATH (a file or a folder)")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        docs = {str(f.relative_to(p)): _read_utf8(f) for f in files}
    else:
        docs = {para.decode("utf-8"): para for para in paragraphs(_read_utf8(p))}
    if not docs:
        raise PwmprError(f"text {p}: no documents found (an empty file or folder)")
    return text_bundle(f"text:{p}", docs, context)


def paragraphs(data: bytes) -> Iterable[bytes]:
    """The non-blank paragraphs (text between blank lines) of ``data``."""
    return [para for para in re.split(rb"\n[ \t\r]*\n", data) if para.strip()]


def _read_utf8(p: Path) -> bytes:
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PwmprError(f"cannot read text file {p}: {exc.strerror or exc}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PwmprError(f"text file {p} is not UTF-8 text (byte {exc.start} is not valid UTF-8)") from None
    return data

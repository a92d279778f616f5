"""The Python API beside ``pwmpr grow``: grow any ``nn.Module`` on your own data through the same runner.

The run and its folder are those of a CLI run. A model or data given as objects is recorded as ``python:...``
and resumes only from Python; a model given as ``package.module:function`` can be rebuilt from the run folder
(``pwmpr export --trust-code``, ``pwmpr.load(..., trust_remote_code=True)``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pwmpr import rundir
from pwmpr.config import RunConfig, section_field
from pwmpr.data import MIN_VAL_SAMPLES, DataBundle, TensorSplit, _split_validation, set_augment
from pwmpr.data.folder import stream_loader
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.models import OBJECT_PREFIX, create_model, trusted_code

_SECTIONS = ("train", "growth", "stop", "shrink")


@dataclass
class GrownModel:
    """What :func:`grow_module` returns: the trained model (the object passed in, or the one built from its spec),
    its final masks, the run summary and the run folder."""

    model: nn.Module
    masks: MaskSet
    summary: dict[str, Any]
    run_dir: Path


def grow_module(
    model: nn.Module | str,
    train: Any,
    *,
    val: Any = None,
    test: Any = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    out: str | Path | None = None,
    config: RunConfig | Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    quiet: bool = True,
    **overrides: Any,
) -> GrownModel:
    """Grow a sparse version of ``model`` on your data with PWMPR (or a baseline ``method``), like ``pwmpr grow``.

    Args:
        model: an ``nn.Module`` (trained in place), a registered name, or ``"package.module:function"`` naming
            ``function(num_classes, input_shape) -> nn.Module``.
        train: tensors ``(x, y)`` (x float ``(N, ...)``, y integer labels), a map-style ``Dataset`` of ``(x, y)``,
            or a ``DataLoader`` (pwmpr draws the order itself, so a run is reproducible).
        val: validation data in the same forms; it drives the stop rule. Default: ``val_fraction`` of ``train``
            (at least 100 samples).
        test: test data, only reported (``summary["test_acc"]``; None without).
        num_classes: default: the largest label + 1, or a Dataset's ``classes`` / ``targets``.
        input_shape: one input without the batch dimension; default: that of the first training sample.
        out: the run folder (default: ``runs/<method>-<model>-python-...``).
        config: a RunConfig (or its dict) to start from; the defaults of ``pwmpr grow`` otherwise.
        resume: continue ``out`` from its last checkpoint (pass the same model and data again).
        force: replace a non-empty ``out``.
        **overrides: RunConfig fields, e.g. ``phase_epochs=2``, ``device="cuda"``, ``growth={"gamma": 0.5}``.

    Returns:
        A :class:`GrownModel`: the model with its final weights (masked entries zero), the MaskSet, the summary.

    Raises:
        PwmprError: unsupported or inconsistent data, a model that cannot take the inputs, an op without a rule,
            and every error ``pwmpr grow`` reports.
    """
    try:
        return _grow_module(model, train, val=val, test=test, num_classes=num_classes, input_shape=input_shape,
                            out=out, config=config, resume=resume, force=force, quiet=quiet, overrides=overrides)
    except PwmprError as exc:
        worded = api_words(str(exc))
        if worded == str(exc):
            raise
        raise PwmprError(worded) from exc.__cause__


def _grow_module(model, train, *, val, test, num_classes, input_shape, out, config, resume, force, quiet,
                 overrides) -> GrownModel:
    """:func:`grow_module`'s work, with the errors still in the CLI's words."""
    from pwmpr.progress import make_reporter
    from pwmpr.run_folder import run_config

    if not isinstance(model, (nn.Module, str)):
        raise PwmprError(f"model must be an nn.Module, a registered name or 'package.module:function', got "
                         f"{type(model).__name__}")
    cfg = _grow_config(config, overrides)
    if cfg.context is not None:
        raise PwmprError("context applies to the text data sets pwmpr reads; your own token windows set their length")
    train_split, train_opts = _as_dataset(train, "train")
    val_split, _ = _as_dataset(val, "val") if val is not None else (None, {})
    test_split, _ = _as_dataset(test, "test") if test is not None else (None, {})
    if "batch_size" in train_opts and "batch_size" not in dict(overrides.get("train") or {}):
        cfg.train.batch_size = train_opts["batch_size"]
    if "workers" in train_opts and "workers" not in overrides:
        cfg.workers = train_opts["workers"]
    if test_split is None and cfg.method == "imp":
        raise PwmprError("method 'imp' records the test accuracy of every level: pass test=")

    shape = tuple(int(s) for s in input_shape) if input_shape is not None else _first_shape(train_split)
    for name, split in (("val", val_split), ("test", test_split)):
        if split is not None and _first_shape(split) != shape:
            raise PwmprError(f"{name}: its inputs have shape {_first_shape(split)}, the training inputs {shape}")
    if val_split is not None and len(val_split) < MIN_VAL_SAMPLES:
        raise PwmprError(f"val has {len(val_split)} samples; the stop rule needs at least {MIN_VAL_SAMPLES}")
    if num_classes is None and isinstance(model, nn.Module):  # the model's logits say how many classes there are
        num_classes = _model_width(model, shape)
    classes = int(num_classes) if num_classes is not None else _num_classes(train_split, val_split, test_split)
    if classes < 2:
        raise PwmprError(f"num_classes must be >= 2 (a classifier), got {classes}")
    kind = "tensors" if isinstance(train_split, TensorSplit) else type(train_split).__name__
    cfg.data = f"{OBJECT_PREFIX}{kind}"
    cfg.data_dir = None

    bundle = DataBundle(cfg.data, classes, shape, "", train_split, val_split, test_split,
                        make_loader=None if isinstance(train_split, TensorSplit) else
                        functools.partial(_stream, collate_fn=train_opts.get("collate_fn")))
    if val_split is None:
        bundle = _split_validation(bundle, cfg.val_fraction, cfg.max_train, MIN_VAL_SAMPLES)
    elif cfg.max_train is not None:
        bundle.train = _head(bundle.train, cfg.max_train)
    _check_labels(bundle, classes)
    set_augment(bundle, cfg.augment)

    if isinstance(model, str):
        cfg.model = model
        with trusted_code(model):  # named here by the caller: importing it is what they asked for
            module = create_model(model, classes, shape)
    else:
        cfg.model = f"{OBJECT_PREFIX}{type(model).__name__}"
        module = model
    with make_reporter(quiet) as reporter:
        summary = run_config(cfg, out, resume=resume, force=force, reporter=reporter, model=module, bundle=bundle)
    run_dir = Path(summary["run_dir"])
    tensors, _ = rundir.load_tensors(run_dir / rundir.FINAL)
    masks = MaskSet(rundir.split_prefix(tensors, rundir.MASK_PREFIX))
    return GrownModel(module, masks, summary, run_dir)


def _model_width(model: nn.Module, shape: tuple[int, ...]) -> int | None:
    """The model's logits per sample, where one probe forward shows them (a bad shape is reported later)."""
    from pwmpr.probe import output_width

    try:
        return output_width(model, shape)
    except PwmprError:
        return None


_FLAG = re.compile(r"--(no-)?([a-z][a-z0-9-]*)(?: (-?[0-9][0-9.e+-]*)(?![\w.]))?")


def api_words(message: str) -> str:
    """An error message with the CLI's flags in keyword-argument form: ``--stop-tol 0.01`` -> ``stop_tol=0.01``,
    ``--no-tau-core`` -> ``tau_core=False``, ``--resume`` -> ``resume=True``, ``--device`` -> ``device``."""

    def word(m: re.Match) -> str:
        name = m.group(2).replace("-", "_")
        if m.group(1):
            return f"{name}=False"
        if m.group(3):
            return f"{name}={m.group(3)}"
        return f"{name}=True" if name in ("resume", "force", "shrink", "bf16", "tau_core") else name

    return _FLAG.sub(word, message)


def _grow_config(config: RunConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> RunConfig:
    """``config`` (or the defaults) with ``overrides``, merged key by key; a field may be named alone or by its flag."""
    if isinstance(config, RunConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = RunConfig.from_dict(dict(config)).to_dict()
    elif config is None:
        base = RunConfig().to_dict()
    else:
        raise PwmprError(f"config must be a RunConfig or a dict, got {type(config).__name__}")
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            data[key] = {**data[key], **value}
        elif key in data and key not in _SECTIONS:
            data[key] = value
        else:
            section, field = section_field(key)
            data[section] = {**data[section], field: value}
    return RunConfig.from_dict(data)


def _as_dataset(data: Any, what: str) -> tuple[TensorSplit | Dataset, dict[str, Any]]:
    """``data`` as a TensorSplit (tensors) or a map-style Dataset, plus what a DataLoader says about batching."""
    if isinstance(data, DataLoader):
        opts: dict[str, Any] = {"batch_size": data.batch_size, "workers": data.num_workers}
        if data.collate_fn is not torch.utils.data.default_collate:
            opts["collate_fn"] = data.collate_fn
        if data.batch_size is None:
            raise PwmprError(f"{what}: a DataLoader with batch_size=None (a batch sampler) is not supported; pass "
                             "its dataset and set train={'batch_size': ...}")
        return _as_dataset(data.dataset, what)[0], opts
    if isinstance(data, IterableDataset):
        raise PwmprError(f"{what}: an IterableDataset cannot be split, shuffled or sharded by pwmpr; pass a "
                         "map-style Dataset (with __getitem__ and __len__) or tensors")
    if isinstance(data, Dataset):
        if len(data) < 1:  # type: ignore[arg-type]
            raise PwmprError(f"{what}: the Dataset is empty")
        return data, {}
    if isinstance(data, Sequence) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if len(y) == 0:
            raise PwmprError(f"{what}: the tensors hold no sample")
        if len(x) != len(y):
            raise PwmprError(f"{what}: x has {len(x)} samples but y has {len(y)}")
        if y.dim() != 1 or y.is_floating_point() or y.is_complex():
            raise PwmprError(f"{what}: y must be a 1-D tensor of integer class labels, got {y.dtype} "
                             f"{tuple(y.shape)}")
        if len(y) and int(y.min()) < 0:
            raise PwmprError(f"{what}: y holds negative labels")
        if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
            raise PwmprError(f"{what}: x must be a floating-point tensor of finite numbers")
        return TensorSplit(x.detach().float().cpu(), y.detach().long().cpu()), {}
    raise PwmprError(f"{what} must be a pair of tensors (x, y), a map-style Dataset or a DataLoader, got "
                     f"{type(data).__name__}")


def _stream(data, batch_size: int, device: torch.device, *, train: bool = False,
            generator: torch.Generator | None = None, workers: int | None = None, channels_last: bool = False,
            collate_fn=None):
    """The bundle's loader for Datasets: pwmpr's stream loader with the user's collate function."""
    from pwmpr.data.folder import StreamLoader

    if collate_fn is None:
        return stream_loader(data, batch_size, device, train=train, generator=generator, workers=workers,
                             channels_last=channels_last)
    return StreamLoader(data, batch_size, device, train=train, generator=generator, workers=workers,
                        channels_last=channels_last, collate_fn=collate_fn)


def _first_shape(split: TensorSplit | Dataset) -> tuple[int, ...]:
    """The shape of one input of ``split``, batch excluded."""
    if isinstance(split, TensorSplit):
        return tuple(split.x.shape[1:])
    item = split[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], Tensor):
        raise PwmprError("train: Dataset items must be (x, y) with x a tensor (add a transform such as ToTensor())")
    return tuple(item[0].shape)


def _labels(split: TensorSplit | Dataset | None) -> Tensor | None:
    """The labels of a split where they are known without loading every sample."""
    if split is None:
        return None
    if isinstance(split, TensorSplit):
        return split.y
    base, idx = split, None
    if isinstance(split, torch.utils.data.Subset):
        base, idx = split.dataset, list(split.indices)
    targets = getattr(base, "targets", None)
    if targets is None and isinstance(base, torch.utils.data.TensorDataset) and len(base.tensors) >= 2:
        targets = base.tensors[1]
    if targets is None:
        return None
    t = torch.as_tensor(targets)
    return t[idx] if idx is not None else t


def _num_classes(*splits) -> int:
    for split in splits:
        if split is not None and not isinstance(split, TensorSplit) and hasattr(split, "classes"):
            return len(split.classes)
    labels = [lab for lab in (_labels(s) for s in splits) if lab is not None and lab.numel()]
    if not labels:
        raise PwmprError("num_classes cannot be read from this Dataset (it has no classes or targets): pass "
                         "num_classes=")
    return int(max(int(lab.max()) for lab in labels)) + 1


def _check_labels(bundle: DataBundle, classes: int) -> None:
    for name in ("train", "val", "test"):
        labels = _labels(getattr(bundle, name))
        if labels is not None and labels.numel() and int(labels.max()) >= classes:
            raise PwmprError(f"{name}: label {int(labels.max())} is out of range for num_classes={classes}")


def _head(split: TensorSplit | Dataset, n: int) -> TensorSplit | Dataset:
    if isinstance(split, TensorSplit):
        return TensorSplit(split.x[:n], split.y[:n])
    return torch.utils.data.Subset(split, list(range(min(n, len(split)))))


__all__ = ["GrownModel", "grow_module"]

"""MODELS: name -> factory ``(num_classes, input_shape)`` for every network pwmpr can seed, grow, prune and export.

A name may also be a code spec ``package.module:function``; it is imported only inside :func:`trusted_code`, so
a spec read from a run or export folder never runs silently.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from pwmpr._tv_compat import import_torchvision
from pwmpr.errors import PwmprError

# Shape checks and forward errors live in pwmpr.probe (the engine uses them without the zoo); re-exported here.
from pwmpr.probe import (  # noqa: F401
    check_input_shape,
    declare_input_dtype,
    first_line,
    forward_error,
    is_out_of_memory,
    normalize_input_shape,
    out_of_memory_error,
)
from pwmpr.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

# Importing the families fills MODELS (timm style).
from pwmpr.models import cifar_resnet, cnn, gpt, mlp, tv_resnet, vit  # noqa: E402,F401


def create_model(name: str, num_classes: int, input_shape: Sequence[int], *, input_dtype: torch.dtype | None = None,
                 **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and inputs of ``input_shape`` (and ``input_dtype``, if given).

    Raises:
        PwmprError: unknown name, a non-positive class count, or an input shape (or dtype) the model cannot take.
    """
    if int(num_classes) < 1:
        raise PwmprError(f"num_classes must be >= 1, got {num_classes}")
    shape = normalize_input_shape(input_shape)
    if is_code_spec(name):
        model = _create_from_code(name, int(num_classes), shape, kwargs)
        if input_dtype is not None:
            declare_input_dtype(model, input_dtype)
        check_input_shape(model, shape)
        return model
    if name.startswith(OBJECT_PREFIX):
        raise PwmprError(f"model {name!r} was a Python object handed to pwmpr.grow_module and cannot be rebuilt "
                         "from its name: pass the object again (pwmpr.export_grown(run_dir, out, model=model), "
                         "pwmpr.grow_module(model, ..., resume=True))")
    factory = MODELS.get(name)
    try:
        model = factory(num_classes=int(num_classes), input_shape=shape, **kwargs)
    except PwmprError:
        raise
    except ValueError as exc:
        raise PwmprError(f"input_shape {shape} does not suit model {name!r}: {exc}") from None
    if input_dtype is not None:
        declare_input_dtype(model, input_dtype)
    check_input_shape(model, shape)
    return model


# -- the user's own models: ``package.module:function`` ----------------------------------------------------------
#: Model name recorded for a model handed over as an object (pwmpr.grow_module): ``python:<class name>``.
OBJECT_PREFIX = "python:"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_CODE_SPEC = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
# True: every code spec may be imported; a frozenset: only these. Default: none (loading never runs code).
_TRUSTED: contextvars.ContextVar[bool | frozenset[str]] = contextvars.ContextVar("pwmpr_trusted_code",
                                                                                  default=frozenset())


def is_code_spec(name: str) -> bool:
    """True for ``package.module:function`` (a user factory), False for registered names and ``python:...``."""
    return isinstance(name, str) and not name.startswith(OBJECT_PREFIX) and bool(_CODE_SPEC.match(name))


@contextlib.contextmanager
def trusted_code(spec: str | bool = True) -> Iterator[None]:
    """Allow :func:`create_model` to import code specs inside the block: all of them (True) or one ``spec``."""
    current = _TRUSTED.get()
    if spec is True or current is True:
        new: bool | frozenset[str] = True
    elif spec is False:
        new = current
    else:
        new = current | {spec}
    token = _TRUSTED.set(new)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _is_trusted(spec: str) -> bool:
    trusted = _TRUSTED.get()
    return trusted is True or spec in trusted


def _create_from_code(spec: str, num_classes: int, shape: tuple[int, ...], kwargs: dict) -> nn.Module:
    """``function(num_classes, input_shape, **kwargs)`` of ``package.module:function``; PwmprError when it can't."""
    if not _is_trusted(spec):
        raise PwmprError(f"model {spec!r} is Python code, and importing it runs that code; pwmpr imports it only when "
                         "asked: pass --trust-code (pwmpr.load(..., trust_remote_code=True)) if you trust it")
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    factory: object = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise PwmprError(f"model {spec}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise PwmprError(f"model {spec}: {attr!r} is not callable; it must be function(num_classes, input_shape)")
    try:
        model = factory(num_classes, shape, **kwargs)
    except PwmprError:
        raise
    except (Exception, SystemExit) as exc:  # the user's factory failed: say where, keep its traceback chained
        raise PwmprError(f"model {spec}: {attr}(num_classes={num_classes}, input_shape={shape}) failed: "
                         f"{_describe(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise PwmprError(f"model {spec}: {attr}(num_classes, input_shape) must return a torch.nn.Module, "
                         f"got {type(model).__name__}")
    return model


def _import(module_name: str, spec: str):
    """Import ``module_name``, searching the current directory last; a module that fails to import is reported so."""
    with contextlib.suppress(PwmprError, ImportError):
        import_torchvision()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):  # the module exists; one of its imports is missing
            raise _import_failed(spec, module_name, exc) from exc
    except (Exception, SystemExit) as exc:  # the user's module raised (or exited) while being imported
        raise _import_failed(spec, module_name, exc) from exc
    cwd = os.getcwd()
    if cwd in sys.path:
        raise PwmprError(f"model {spec}: no module named {module_name!r} (not installed, not on PYTHONPATH and not "
                         f"in {cwd})")
    sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):
            raise _import_failed(spec, module_name, exc) from exc
        raise PwmprError(f"model {spec}: no module named {module_name!r} (not installed, not on PYTHONPATH and not "
                         f"in {cwd})") from None
    except (Exception, SystemExit) as exc:
        raise _import_failed(spec, module_name, exc) from exc
    finally:
        sys.path.remove(cwd)


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """True when ``exc`` says ``module_name`` itself (or a package above it) is missing, not one of its imports."""
    return exc.name is None or module_name == exc.name or module_name.startswith(exc.name + ".")


def _describe(exc: BaseException) -> str:
    """An exception in a few words: ``sys.exit(3)`` for a SystemExit, ``Type: first line`` otherwise."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _import_failed(spec: str, module_name: str, exc: BaseException) -> PwmprError:
    """The error for a module that was found but did not import; a missing dependency is named as such."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return PwmprError(f"model {spec}: importing {module_name!r} failed: it imports {exc.name!r}, which is not "
                          "installed")
    return PwmprError(f"model {spec}: importing {module_name!r} failed: {_describe(exc)}")


def list_models() -> list[str]:
    """Names of all registered models."""
    return MODELS.names()

"""What a torchvision data set class takes, and the arguments a user gives it in ``torchvision:NAME:KEY=VALUE,...``
(``pwmpr.data.torchvision_any``)."""

from __future__ import annotations

import inspect

from pwmpr.errors import PwmprError


def parameters(cls) -> dict[str, inspect.Parameter]:
    """The named parameters ``cls`` takes: its constructor's, and where that has ``**kwargs``, those of its base
    classes' ``__init__`` (EMNIST's ``train`` and ``download``, handed to MNIST; ImageNet's go to ImageFolder)."""
    def named(signature: inspect.Signature) -> dict[str, inspect.Parameter]:
        return {n: p for n, p in signature.parameters.items()
                if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    signature = inspect.signature(cls)
    params = named(signature)
    for base in cls.__mro__[1:]:  # each base's __init__ in turn, while the one before hands **kwargs on
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
        if base is object or "__init__" not in vars(base):
            continue
        signature = inspect.signature(base.__init__)
        for n, p in named(signature).items():
            params.setdefault(n, p)
    return params


def downloads(cls) -> bool:
    """Whether ``cls`` takes a download flag: its own, or one its ``**kwargs`` hand to a base class (QMNIST's to
    MNIST; ImageNet's go to ImageFolder, which has none)."""
    return "download" in parameters(cls)


#: Constructor arguments pwmpr sets itself, which ``torchvision:NAME:KEY=VALUE`` cannot.
SET_BY_PWMPR = ("root", "train", "download", "transform", "target_transform", "transforms", "loader",
                "is_valid_file")


def literal(text: str, param: inspect.Parameter | None = None):
    """A ``KEY=VALUE`` value: the text itself for a parameter whose default or annotation is text (INaturalist's
    ``version=2019``), else true/false, none, a whole number, a number, or the text itself."""
    if param is not None and (isinstance(param.default, str) or param.annotation in (str, "str")):
        return text
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def arguments(cls, text: str) -> dict:
    """The constructor arguments ``KEY=VALUE,KEY=VALUE`` of ``torchvision:NAME:KEY=VALUE,...`` for ``cls``, or a
    PwmprError for a pair that is not one, an argument ``cls`` does not take, or one pwmpr sets itself."""
    given: dict = {}
    if not text:
        return given
    params = parameters(cls)
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key or not value:
            raise PwmprError(f"torchvision:{cls.__name__}:{text}: {item.strip()!r} is not KEY=VALUE; pass "
                             f"constructor arguments as torchvision:{cls.__name__}:KEY=VALUE,KEY=VALUE")
        if key not in params:
            takes = ", ".join(sorted(n for n in params if n not in SET_BY_PWMPR))
            raise PwmprError(f"torchvision's {cls.__name__} takes no argument {key!r}; "
                             + (f"it takes {takes}" if takes else "it takes no arguments of its own"))
        if key in SET_BY_PWMPR:
            raise PwmprError(f"torchvision:{cls.__name__}: pwmpr decides {key} itself (its splits, files and "
                             "transforms); pass only the data set's own choices")
        if key in given:
            raise PwmprError(f"torchvision:{cls.__name__}:{text}: {key} is given twice")
        given[key] = literal(value, params[key])
    return given

"""Flags generated from the config dataclasses: a field's name, type, default and help are written once, there.

Every generated flag defaults to None ("not given"), so a ``--config`` file or the method's default keeps its
value. :func:`command` builds a command whose ``__signature__`` holds one parameter per flag.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from pwmpr.config import RunConfig

#: RunConfig fields that are not flags, and why.
EXCLUDED = {
    "method": "chosen by the command itself: pwmpr grow, pwmpr baseline dense|imp|oneshot|rigl|set",
    "options": "a method's options have their own flags, generated from its options dataclass",
}
#: Help panel of each config section.
PANELS = {"": "Run", "train": "Training", "growth": "Growth", "stop": "Stop", "shrink": "Shrink"}
_KINDS = (bool, int, float, str)


@dataclass(frozen=True)
class Flag:
    """One generated option: ``key`` (a config path like ``stop.tol``, or an options field) as ``--decl``."""

    key: str
    decl: str  # "--stop-tol"
    kind: type  # bool, int, float or str
    help: str
    panel: str | None = None

    @property
    def param(self) -> str:
        """The Python parameter name Typer passes the value under."""
        return self.decl.removeprefix("--").replace("-", "_")

    def parameter(self) -> inspect.Parameter:
        if self.kind is bool:
            name = self.decl.removeprefix("--")
            opt = typer.Option(f"--{name}/--no-{name}", metavar="", help=self.help, rich_help_panel=self.panel)
        else:
            opt = typer.Option(self.decl, help=self.help, rich_help_panel=self.panel)
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[self.kind | None, opt])


def leaf_fields(cls: type = RunConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(path, field, type)`` of every non-section field of ``cls``, sections (nested dataclasses) flattened."""
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        hint = hints[fld.name]
        if dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{fld.name}.")
        else:
            yield f"{prefix}{fld.name}", fld, hint


def flag_name(fld: dataclasses.Field) -> str:
    """The CLI name of a field, without ``--``: its ``flag`` metadata, else its name with dashes."""
    return fld.metadata.get("flag", fld.name.replace("_", "-"))


def _kind(hint: Any, where: str) -> type:
    """bool, int, float or str from a field type (``int | None`` -> int)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    if hint not in _KINDS:
        raise TypeError(f"{where}: a flag needs a bool, int, float or str field, not {hint!r}")
    return hint


def registry_names(fld: dataclasses.Field) -> list[str] | None:
    """The names in the registry a field's ``registry`` metadata (``"module:NAME"``) points to, if it has one."""
    if "registry" not in fld.metadata:
        return None
    module, _, attr = fld.metadata["registry"].partition(":")
    return list(getattr(importlib.import_module(module), attr).names())


def field_help(fld: dataclasses.Field, text: str | None = None) -> str:
    """A field's help (or ``text``) with its registry's names (in place of ``{names}``, or appended) and default."""
    text = fld.metadata.get("help", "") if text is None else text
    names = registry_names(fld)
    if names is not None:
        listed = ", ".join(names)
        text = text.replace("{names}", listed) if "{names}" in text else f"{text} One of: {listed}."
    default = fld.default
    if default is dataclasses.MISSING or (default is None and "(default:" in text):  # the text says what None means
        return text
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
    return f"{text} (default: {shown})"


def _field(path: str) -> dataclasses.Field:
    for p, fld, _ in leaf_fields():
        if p == path:
            return fld
    raise KeyError(path)


def hlp(path: str) -> str:
    """Help text of config field ``path`` (``seed`` or ``growth.gamma``) with its default."""
    return field_help(_field(path))


def config_flags(only: Iterable[str] | None = None, skip: Iterable[str] = (), names: dict[str, str] | None = None,
                 helps: dict[str, str] | None = None) -> list[Flag]:
    """Flags of the RunConfig fields (all but :data:`EXCLUDED`, or ``only`` these paths), minus ``skip``.

    ``names`` and ``helps`` override a path's flag name or help text.
    """
    names, helps = names or {}, helps or {}
    wanted = None if only is None else set(only)
    flags = []
    for path, fld, hint in leaf_fields():
        if path in EXCLUDED or path in skip or (wanted is not None and path not in wanted):
            continue
        section = path.rpartition(".")[0]
        flags.append(Flag(path, "--" + names.get(path, flag_name(fld)), _kind(hint, path),
                          field_help(fld, helps.get(path)), PANELS[section]))
    if wanted is not None and wanted - {f.key for f in flags}:
        raise KeyError(f"no such config field(s): {', '.join(sorted(wanted - {f.key for f in flags}))}")
    return flags


def options_flags(cls: type, panel: str | None = None) -> list[Flag]:
    """Flags of a method's options dataclass (``ImpOptions``): one per field, keyed by the field name."""
    hints = typing.get_type_hints(cls)
    return [Flag(f.name, "--" + flag_name(f), _kind(hints[f.name], f"{cls.__name__}.{f.name}"), field_help(f), panel)
            for f in dataclasses.fields(cls)]


def option(name: str, kind: Any, default: Any, *decls: str, **kw: Any) -> inspect.Parameter:
    """A command's own option for :func:`command` (not a config field): ``--name`` unless ``decls`` are given."""
    decls = decls or ("--" + name.replace("_", "-"),)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, typer.Option(*decls, **kw)])


def switch(name: str, help: str, *decls: str) -> inspect.Parameter:
    """A plain on-switch (no value, no ``--no-``) such as ``--force``."""
    return option(name, bool, False, *decls, metavar="", help=help)


TRUST_HELP = ("Allow importing the package.module:function model named by a --config file or a --resume folder "
              "(importing runs its code; a --model typed on the command line needs no flag).")

#: The flags that steer a run rather than configure it (the same on grow and every baseline).
RUN_CONTROL = [
    option("out", Path | None, None, "--out", "-o", help="Run folder to create (default: runs/<method>-<model>-"
           "<data>-s<seed>-<config hash>)."),
    option("resume", Path | None, None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    option("config", Path | None, None, "--config", help="Start from this config.json (a run folder's reproduces "
           "the run); flags given too override it."),
    switch("force", "Overwrite a non-empty --out folder."),
    switch("trust_code", TRUST_HELP),
    switch("quiet", "Print nothing but errors.", "--quiet", "-q"),
]


def int_option(name: str, help: str) -> inspect.Parameter:
    """An ``int`` option that defaults to None (not given), e.g. the baselines' ``--epochs``."""
    return option(name, int | None, None, help=help)


def decl_of(param: inspect.Parameter) -> str:
    """The long option name of a command parameter (``--out``)."""
    info = typing.get_args(param.annotation)[1]
    return info.param_decls[0] if info.param_decls else "--" + param.name.replace("_", "-")


def given_flags(flags: Iterable[Flag], values: dict[str, Any]) -> list[str]:
    """The ``--decl`` of every flag in ``flags`` whose value (keyed by ``Flag.key``) was given (is not None)."""
    return [f.decl for f in flags if values.get(f.key) is not None]


def command(name: str, doc: str, groups: dict[str, list[Flag]], extra: list[inspect.Parameter],
            body: Callable[..., Any]) -> Callable[..., None]:
    """A Typer command ``name`` with one option per flag (``groups``, in order) and then ``extra``.

    ``body`` gets each group as a ``{flag.key: value}`` dict under its name, and each ``extra`` parameter by name.
    """
    params = [f.parameter() for flags in groups.values() for f in flags] + list(extra)
    seen: set[str] = set()
    for p in params:  # two fields on one flag name would silently shadow each other
        if p.name in seen:
            raise TypeError(f"{name}: flag {decl_of(p)} is declared twice")
        seen.add(p.name)

    def cmd(**kwargs: Any) -> None:
        grouped = {g: {f.key: kwargs.pop(f.param) for f in flags} for g, flags in groups.items()}
        body(**grouped, **kwargs)

    cmd.__name__ = cmd.__qualname__ = name
    cmd.__module__ = body.__module__
    cmd.__doc__ = doc
    cmd.__signature__ = inspect.Signature(params)  # what Typer reads
    cmd.flags = groups  # for tests and for refusal messages
    return cmd


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with every non-None ``{"growth.gamma": 0.3, "seed": 1}`` override set, re-validated."""
    data = cfg.to_dict()
    for path, value in overrides.items():
        if value is None:
            continue
        part, _, name = path.rpartition(".")
        (data[part] if part else data)[name] = value
    return RunConfig.from_dict(data)

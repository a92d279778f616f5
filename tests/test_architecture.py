"""The layer map of docs/architecture.md holds: no import, static or at runtime, goes against it.

The map (parts, their modules, what each may import, and the arrows that must never exist) is read from the two
tables of docs/architecture.md, its only copy.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
# Source folder -> the import package it installs as (pyproject.toml's package-dir).
SOURCES = {"pwmpr": "pwmpr", "cli": "pwmpr.cli", "export": "pwmpr.export"}
FACADE = "pwmpr"


# -- the map, parsed from docs/architecture.md --------------------------------------------------------------------
def _table(marker: str) -> list[list[str]]:
    text = DOC.read_text()
    match = re.search(rf"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", text, re.S)
    assert match, f"docs/architecture.md has no <!-- {marker} --> table"
    rows = [[cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")]
            for line in match.group(1).strip().splitlines()]
    return [row for row in rows[2:]]  # header and separator dropped


def _names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split(",") if name.strip()]


@cache
def layer_map() -> dict[str, tuple[list[str], set[str]]]:
    """part -> (module patterns, parts it may import directly); ``*`` expanded to every other part."""
    rows = _table("layer-map")
    parts = [row[0] for row in rows]
    out = {}
    for part, modules, allowed in rows:
        allowed_parts = set(parts) - {part} if allowed == "*" else set(_names(allowed))
        unknown = allowed_parts - set(parts)
        assert not unknown, f"part {part} may import unknown parts {unknown}"
        out[part] = (_names(modules), allowed_parts)
    return out


@cache
def never_map() -> dict[str, set[str]]:
    """part -> parts it must never reach, ``*`` expanded to every part outside its may-import column."""
    lm = layer_map()
    out = {}
    for part, forbidden in _table("never"):
        assert part in lm, f"never-table names unknown part {part}"
        out[part] = set(lm) - lm[part][1] - {part} if forbidden == "*" else set(_names(forbidden))
        assert out[part] <= set(lm), f"never-table of {part} names unknown parts {out[part] - set(lm)}"
    return out


def reach(part: str) -> set[str]:
    """The parts ``part`` reaches through may-import arrows, itself included; the lazy facade is not followed."""
    lm = layer_map()
    seen, todo = {part}, [part]
    while todo:
        for nxt in lm[todo.pop()][1]:
            if nxt not in seen and (nxt != "facade" or part == "facade"):
                seen.add(nxt)
                todo.append(nxt)
    return seen


def part_of(module: str) -> str | None:
    hits = [part for part, (patterns, _) in layer_map().items()
            if any(fnmatch.fnmatchcase(module, p) and (p.endswith("*") or module == p) for p in patterns)]
    assert len(hits) <= 1, f"{module} is in several parts: {hits}"
    return hits[0] if hits else None


# -- the source tree -----------------------------------------------------------------------------------------------
@cache
def modules() -> dict[str, Path]:
    """Every module of the three packages -> its file."""
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *rel[:-1]) if rel[-1] == "__init__" else (package, *rel))
            out[name] = path
    return out


def _is_package(module: str) -> bool:
    return modules().get(module, Path()).name == "__init__.py"


@cache
def facade_exports() -> dict[str, str]:
    """The facade's lazily re-exported names -> the module that defines each (its ``_EXPORTS``)."""
    tree = ast.parse(modules()[FACADE].read_text())
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
                return ast.literal_eval(node.value)
    raise AssertionError("pwmpr/__init__.py defines no _EXPORTS")


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` too (the facade aside)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)] or [module]


def _resolve_from(base: str, name: str) -> str:
    """What ``from base import name`` loads: the submodule ``base.name``, or what defines ``name``."""
    if f"{base}.{name}" in modules():
        return f"{base}.{name}"
    if base == FACADE and name in facade_exports():
        return facade_exports()[name]
    return base


def imports_of(module: str) -> list[tuple[int, str]]:
    """``(line, project module it loads)`` for every import in ``module``'s source, function-level ones included."""
    path = modules()[module]
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [_resolve_from(base, alias.name) for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for target in targets:
            if target == FACADE:
                found.append((node.lineno, FACADE))
            elif target.startswith(FACADE + "."):
                found.extend((node.lineno, t) for t in _with_parents(target))
    return found


def violations(module: str, loaded: list[str]) -> list[str]:
    """Why each of ``loaded`` (modules that ``module`` imports) goes against the map; empty when none does."""
    part = part_of(module)
    allowed = layer_map()[part][1] | {part}
    forbidden = never_map().get(part, set())
    problems = []
    for target in loaded:
        target_part = part_of(target)
        if target_part is None:
            problems.append(f"{target} belongs to no part")
        elif target_part in forbidden:
            problems.append(f"{target} is part {target_part}, which part {part} must never import")
        elif target_part not in allowed and not (target == FACADE and target_part == "facade"):
            problems.append(f"{target} is part {target_part}, not in what part {part} may import: {sorted(allowed)}")
    return problems


# -- the tests -----------------------------------------------------------------------------------------------------
def test_every_module_belongs_to_one_part():
    homeless = [m for m in modules() if part_of(m) is None]
    assert not homeless, f"add these modules to a part in docs/architecture.md: {homeless}"
    empty = [part for part, (patterns, _) in layer_map().items()
             if not any(part_of(m) == part for m in modules())]
    assert not empty, f"parts with no module (stale rows in docs/architecture.md): {empty}"


def test_every_package_is_installed():
    """Each package folder is in pyproject.toml's package list, or a wheel would leave it out."""
    match = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M)
    assert match, "pyproject.toml has no [tool.setuptools] packages list"
    listed = set(re.findall(r'"([^"]+)"', match.group(1)))
    missing = sorted(m for m in modules() if _is_package(m) and m not in listed)
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {missing}"


def test_the_map_keeps_the_never_arrows():
    """Following may-import arrows transitively never reaches a forbidden part."""
    bad = {part: sorted(reach(part) & forbidden) for part, forbidden in never_map().items() if reach(part) & forbidden}
    assert not bad, f"docs/architecture.md lets these parts reach what they must never import: {bad}"


def test_no_static_import_goes_against_the_map():
    problems = [f"{modules()[m].relative_to(ROOT)}:{line}: {m} imports {why}"
                for m in modules() for line, target in imports_of(m) for why in violations(m, [target])]
    assert not problems, "imports against docs/architecture.md:\n" + "\n".join(problems)


def test_every_module_over_350_lines_is_named_with_its_one_job():
    """docs/architecture.md's "Modules over 350 lines" names every such module, and only modules that are."""
    section = DOC.read_text().split("\n## Modules over 350 lines\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\* `([^`]+\.py)`: \S", section, re.M))
    long = {path.relative_to(ROOT).as_posix() for path in modules().values()
            if len(path.read_text().splitlines()) > 350}
    assert not long - named, ("split these modules by job, or name their one job under 'Modules over 350 lines' in "
                              f"docs/architecture.md: {sorted(long - named)}")
    stale = sorted(name for name in named - long)
    assert not stale, f"docs/architecture.md's 'Modules over 350 lines' names files that are not: {stale}"


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "pwmpr" or m.startswith("pwmpr."))))
"""


def _loaded_by(part: str) -> list[str]:
    names = [m for m in modules() if part_of(m) == part and m != "pwmpr.__main__"]  # __main__ runs the CLI
    res = subprocess.run([sys.executable, "-c", _PROBE, *names], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"importing part {part} failed:\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runtime_modules() -> dict[str, list[str]]:
    """Part -> the pwmpr modules a fresh interpreter holds after importing that part's modules."""
    parts = list(layer_map())
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(parts, pool.map(_loaded_by, parts), strict=True))


def test_no_runtime_import_goes_against_the_map(runtime_modules):
    problems = []
    for part, loaded in runtime_modules.items():
        reachable = reach(part)
        for module in loaded:
            target = part_of(module)
            if module == FACADE:
                continue  # every module's root package: lazy, loads nothing (checked below)
            if target in never_map().get(part, set()):
                problems.append(f"importing part {part} loads {module} (part {target}), which it must never import")
            elif target not in reachable:
                problems.append(f"importing part {part} loads {module} (part {target}), which {part} cannot reach "
                                f"through docs/architecture.md: {sorted(reachable)}")
    assert not problems, "\n".join(problems)


def test_the_facade_is_lazy(runtime_modules):
    assert runtime_modules["facade"] == [FACADE]
    assert runtime_modules["masks"] == [FACADE, "pwmpr.errors", "pwmpr.masks"]


# -- a new attention model needs nothing from pwmpr: the engine reads its forward ----------------------------------
class _MyAttention(torch.nn.Module):
    """An attention block unknown to pwmpr, with its own child names and no hooks."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (torch.nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        attn = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(-2, -1), dim=-1)
        return self.o_proj(attn @ self.v_proj(x))


class _TokenNet(torch.nn.Module):
    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.attn = _MyAttention(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):  # x: (batch, features, tokens)
        return self.head(self.attn(x.transpose(1, 2)).mean(dim=1))


def test_a_new_attention_model_needs_no_engine_change():
    from pwmpr.graph import build_unit_graph
    from pwmpr.score import pwmp_scores
    from pwmpr.seed import phew_masks

    torch.manual_seed(0)
    model, shape = _TokenNet(), (8, 4)
    graph = build_unit_graph(model, shape)
    assert graph.params() == [f"attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + ["head.weight"]
    masks = phew_masks(model, 0.5, shape, seed=0)
    assert all(masks.layer_nonzero()[name] > 0 for name in graph.params())  # q and k get seed edges too
    scores = pwmp_scores(model, masks, shape)
    assert not scores["attn.q_proj.weight"].any() and not scores["attn.k_proj.weight"].any()  # uniform attention
    assert scores["attn.v_proj.weight"].gt(0).all() and scores["attn.o_proj.weight"].gt(0).all()


def test_a_softmax_that_is_not_attention_keeps_the_units_and_scores_as_the_identity():
    from pwmpr.graph import build_unit_graph
    from pwmpr.score import pwmp_scores

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Softmax(dim=1), torch.nn.Linear(5, 3))
    plain = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Identity(), torch.nn.Linear(5, 3))
    plain.load_state_dict(model.state_dict())
    for name, s in pwmp_scores(model, {}, (4,)).items():
        torch.testing.assert_close(s, pwmp_scores(plain, {}, (4,))[name], rtol=1e-12, atol=0)
    graph = build_unit_graph(model, (4,))
    assert [link.weight.shape for link in graph.links] == [(5, 4, 1), (3, 5, 1)]  # the 5 units carry on

"""Show that two runs of one configuration are the same run: config, history and final tensors, bit for bit.

Used to show that a refactor changed no behaviour: run ``pwmpr grow`` at the commit before and at the commit after
(same thread count), then

    python bench/same_run.py BEFORE_RUN AFTER_RUN [--results bench/results/same-run.md]

Compared: config.json (all but the output folder), every history row's fields but wall times and the tau-core's
timings (which measure the machine), summary.json's likewise, and every tensor of final.safetensors (weights and
masks) by its bytes. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, header, quote_into  # noqa: E402

#: Fields that measure the machine, not the run.
TIMING = {"wall_time", "wall_total", "process_wall", "seconds", "share_of_training", "train_seconds"}


def _strip(value, ignore: frozenset[str] = frozenset()):
    """``value`` without its timing fields and the ``ignore`` fields, at any depth."""
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in TIMING and k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def differences(before: Path, after: Path, ignore: frozenset[str] = frozenset()) -> tuple[list[str], dict[str, int]]:
    """What differs between two run folders (empty: the same run), and what was compared; ``ignore`` names config
    and history fields one of the two commits does not write (a setting or record added in between)."""
    import torch
    from safetensors.torch import load_file

    def raw(t: torch.Tensor) -> bytes:
        return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()

    diffs: list[str] = []
    cfg_a, cfg_b = (json.loads((p / "config.json").read_text()) for p in (before, after))
    if _strip(cfg_a, ignore) != _strip(cfg_b, ignore):
        diffs.append("config.json differs")
    rows_a, rows_b = ([json.loads(line) for line in (p / "history.jsonl").read_text().splitlines() if line.strip()]
                      for p in (before, after))
    if len(rows_a) != len(rows_b):
        diffs.append(f"history: {len(rows_a)} rows against {len(rows_b)}")
    for i, (a, b) in enumerate(zip(rows_a, rows_b, strict=False)):
        a, b = _strip(a, ignore), _strip(b, ignore)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"history row {i}: {key}: {a.get(key)!r} against {b.get(key)!r}")
    sum_a, sum_b = (_strip(json.loads((p / "summary.json").read_text())) for p in (before, after))
    for key in sorted(set(sum_a) | set(sum_b)):
        if sum_a.get(key) != sum_b.get(key):
            diffs.append(f"summary: {key}: {sum_a.get(key)!r} against {sum_b.get(key)!r}")
    ta, tb = (load_file(str(p / "final.safetensors")) for p in (before, after))
    if set(ta) != set(tb):
        diffs.append(f"final.safetensors: tensors {sorted(set(ta) ^ set(tb))} in one run only")
    for name in sorted(set(ta) & set(tb)):
        a, b = ta[name], tb[name]
        if a.dtype != b.dtype or a.shape != b.shape or raw(a) != raw(b):
            diffs.append(f"final.safetensors: {name} differs")
    counts = {"history rows": len(rows_a), "summary fields": len(sum_a), "final tensors": len(ta),
              "final tensor bytes": sum(t.numel() * t.element_size() for t in ta.values())}
    return diffs, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--results", type=Path, default=None, help="also write the report here")
    parser.add_argument("--ignore", action="append", default=[],
                        help="a history field only one of the commits writes (repeatable); reported as left out")
    parser.add_argument("--before-commit", default="", help="the commit the first run was made at")
    parser.add_argument("--after-commit", default="", help="the commit the second run was made at")
    args = parser.parse_args()
    diffs, counts = differences(args.before, args.after, frozenset(args.ignore))
    command = " ".join(["python bench/same_run.py", *sys.argv[1:]])
    lines = header(command) + [
        f"Before: `{args.before}`" + (f" (pwmpr commit {args.before_commit})" if args.before_commit else "") + "  ",
        f"After: `{args.after}`" + (f" (pwmpr commit {args.after_commit})" if args.after_commit else ""), "",
        "Compared: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + " (timings left out"
        + "".join(f"; `{f}`, written by one commit only" for f in args.ignore) + ").", "",
        ("**The same run, bit for bit.**" if not diffs else f"**{len(diffs)} difference(s):**"), ""]
    lines += [f"- {d}" for d in diffs[:50]]
    text = "\n".join(lines) + "\n"
    if args.results:
        args.results.write_text(text)
        if args.results.resolve() == (ROOT / "bench/results/same-run.md").resolve():
            quote_into(ROOT / "bench/RESULTS.md", "same-run", text)
    print(text)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()

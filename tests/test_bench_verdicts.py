"""The computed verdicts that bench scripts write into bench/RESULTS.md, on hand-picked numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _attention():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_attention", BENCH / "attention.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _row(rule, seed, acc, pair="mnist5k-vit-mini", sd=0.05):
    return {"pair": pair, "rule": rule, "seed": seed, "seed_density": sd, "test_acc": acc}


def test_attention_verdict_pairs_by_seed_on_the_seeds_every_rule_finished():
    verdict = _attention().verdict
    rows = [_row("pwmp", s, a) for s, a in enumerate((0.90, 0.91, 0.99))]
    rows += [_row("pwmp-attn", s, a) for s, a in enumerate((0.92, 0.93))]  # seed 2 not finished
    # Over its own seeds pwmp has the higher mean (93.3 vs 92.5); on the common seeds 0 and 1 pwmp-attn leads:
    # attn - pwmp = +2, +2 points: mean +2.00, s.e. 0 -> beyond the spread.
    text = verdict(rows)
    assert "is pwmp-attn's" in text and "not counted: seed 2" in text
    assert "pwmp by +2.00 ± 0.00 points (s.e. over 2 paired seeds): beyond the spread" in text
    assert text.endswith("It wins beyond the spread over seeds against every other rule.")


def test_attention_verdict_within_the_spread_and_one_verdict_per_pair():
    verdict = _attention().verdict
    rows = [_row("pwmp", s, a) for s, a in enumerate((0.90, 0.92, 0.94))]
    rows += [_row("pwmp-qk-head", s, a) for s, a in enumerate((0.93, 0.91, 0.95))]
    # head - pwmp = +3, -1, +1: mean +1.00, sd 2.00, s.e. 2/sqrt(3) = 1.15 -> within.
    rows += [_row("pwmp", 0, 0.5, pair="digits-vit-mini"), _row("pwmp-attn", 0, 0.6, pair="digits-vit-mini")]
    text = verdict(rows)
    first, second = text.split("\n\n")
    assert first.startswith("digits-vit-mini, seed density 0.05: ")
    assert "pwmp by +10.00 points on one seed: undecided" in first
    assert second.startswith("mnist5k-vit-mini, seed density 0.05: ")
    assert "pwmp by +1.00 ± 1.15 points (s.e. over 3 paired seeds): within the spread" in second
    assert second.endswith("Its lead is not beyond the spread over seeds against at least one rule.")

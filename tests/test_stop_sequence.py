"""The stop sequence (pwmpr.stop.sequence) and the plateau rule it runs by default (docs/method.md, "Stop")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pwmpr.config import StopConfig
from pwmpr.stop import STOP_RULES, Observation, StopContext
from pwmpr.stop.plateau import resolvable_span
from pwmpr.stop.sequence import growth_stop, stop_context


def rows(densities, accuracies, n=None):
    return [{"stage": "phase", "density": d, "val_acc": a, "val_n": n} for d, a in zip(densities, accuracies,
                                                                                       strict=True)]


def doubling_curve(slope, k):
    """k points, each at twice the density of the one before, gaining exactly ``slope`` per doubling."""
    return [0.01 * 2 ** i for i in range(k)], [0.8 + slope * i for i in range(k)]


def test_the_default_stop_is_the_plateau_rule_at_half_a_point_per_doubling():
    stop = StopConfig()
    assert (stop.rule, stop.plateau_tol) == ("plateau", 0.005)


@pytest.mark.parametrize(("slope", "stops"), [(0.004, True), (0.006, False)])
def test_plateau_rule_stops_exactly_when_a_doubling_buys_less_than_the_tolerance(slope, stops):
    # Exactly linear in log2(density): the fitted gain per doubling is the slope, with standard error 0.
    d, a = doubling_curve(slope, 6)
    stop = StopConfig()
    early = growth_stop(rows(d[:5], a[:5]), stop, 10, d[4])  # 5 points: one refit of the 5-point window only
    assert early.reason is None and "needs 6 points" in early.info["fit_status"]
    verdict = growth_stop(rows(d, a), stop, 10, d[-1])
    assert verdict.reason == ("plateau" if stops else None)
    assert verdict.info["stop_rule"] == "plateau"
    assert verdict.info["plateau_fit"]["slope"] == pytest.approx(slope)  # recorded on the row that stops too
    if stops:
        assert f"{slope:.4g} < 0.005" in verdict.info["fit_status"]


def test_the_plateau_bound_adds_one_standard_error():
    # No gain per doubling, but points that scatter by 3 points: the bound slope + s.e. decides, not the slope.
    d = [0.01 * 2 ** i for i in range(6)]
    a = [0.80, 0.83, 0.80, 0.83, 0.80, 0.83]
    x = np.log2(d[1:])
    slope, intercept = np.polyfit(x, a[1:], 1)
    resid = np.asarray(a[1:]) - (slope * x + intercept)
    se = math.sqrt(float(np.sum(resid ** 2)) / 3 / float(np.sum((x - x.mean()) ** 2)))
    assert slope < 0.005 < slope + se
    assert growth_stop(rows(d, a), StopConfig(), 10, d[-1]).reason is None


def test_the_sequence_order_rule_fallback_density_phases():
    d, a = doubling_curve(0.0, 6)  # flat: every rule that reads it would stop
    flat = rows(d, a, n=100_000)
    assert growth_stop(flat, StopConfig(rule="gain", tol=0.01), 10, d[-1]).reason == "saturated"
    fallback = growth_stop(flat, StopConfig(rule="none"), 10, d[-1])
    assert fallback.reason == "plateau" and "plateau" in fallback.info["plateau_status"]
    off = StopConfig(rule="none", plateau_tol=0)
    assert growth_stop(flat, off, 10, d[-1]).reason is None
    assert growth_stop(flat, off, 10, 1.0).reason == "max-density"
    assert growth_stop(flat, StopConfig(rule="none", plateau_tol=0, max_phases=6), 10, d[-1]).reason == "max-phases"
    assert growth_stop(flat, StopConfig(rule="none", plateau_tol=0, max_phases=7), 10, d[-1]).reason is None


def test_shrink_rows_are_not_growth_points():
    d, a = doubling_curve(0.0, 6)
    history = rows(d[:5], a[:5]) + [{"stage": "phase", "density": 0.2, "val_acc": 0.8, "shrink": {"step": 1}}]
    assert growth_stop(history, StopConfig(), 10, 0.2).reason is None  # 5 growth points: too few to stop


def test_plateau_rule_on_noisy_saturating_curves_stops_past_the_knee_and_within_a_bounded_number_of_steps():
    """acc(d) = 0.9 - 0.3 exp(-d / 0.04) with a scatter of 0.2 points between phases, growth x1.25 a step from
    density 0.01. The true gain per doubling, 0.3 (d / 0.04) exp(-d / 0.04) ln 2, falls below half a point at step
    14 (d = 0.227). The 5-point window must first pass it, so the rule stops 4 to 6 steps later in every draw, and
    never before."""
    dens = [0.01 * 1.25 ** i for i in range(30)]
    true = [0.9 - 0.3 * math.exp(-d / 0.04) for d in dens]
    per_doubling = [0.3 * (d / 0.04) * math.exp(-d / 0.04) * math.log(2) for d in dens]
    knee = next(i for i, g in enumerate(per_doubling) if g < 0.005 and dens[i] > 0.04)
    assert knee == 14
    ctx = StopContext(min_points=4, consecutive=2, plateau_tol=0.005)
    rule = STOP_RULES.get("plateau")
    for draw in range(16):
        rng = np.random.default_rng(draw)
        acc = [p + rng.normal(0.0, 0.002) for p in true]
        stop_at = next((k for k in range(1, len(dens) + 1)
                        if rule([Observation(dens[i], acc[i], 3200) for i in range(k)], ctx).stop), None)
        assert stop_at is not None and knee + 4 <= stop_at - 1 <= knee + 6, (draw, stop_at)


def test_the_span_a_plateau_window_needs_is_what_the_validation_set_resolves():
    # ln(1/alpha) validation samples at a gain of tol per doubling: 144 samples, half a point, alpha 0.1 need
    # ln(10) / (144 x 0.005) = 3.198 doublings; 400 samples 1.151; 3,200 samples 0.144.
    assert resolvable_span(144, 0.005, 0.1) == pytest.approx(3.1980, abs=1e-4)
    assert resolvable_span(400, 0.005, 0.1) == pytest.approx(1.1513, abs=1e-4)
    assert resolvable_span(3200, 0.005, 0.1) == pytest.approx(0.1439, abs=1e-4)
    assert resolvable_span(144, 0.005, 0.05) == pytest.approx(math.log(20) / 0.72)
    assert resolvable_span(None, 0.005, 0.1) == resolvable_span(144, 0.005, None) == 0.0


@pytest.mark.parametrize(("n", "first_stop"), [(144, 12), (400, 6), (None, 6)])
def test_flat_points_stop_once_the_window_spans_what_the_validation_set_resolves(n, first_stop):
    """Exactly flat points x1.25 apart (0.322 doublings a step). At 144 samples a window must span 3.198
    doublings: 10 steps (3.22), so 11 points, and 12 for the second refit; at 400 samples 1.151 doublings, which the
    5-point window (4 steps, 1.29) already spans: 6 points, as without a validation size."""
    d = [0.01 * 1.25 ** i for i in range(14)]
    a = [141 / 144] * 14
    stop = StopConfig(plateau_resolve=True)  # --plateau-resolve
    first = next(k for k in range(1, 15) if growth_stop(rows(d[:k], a[:k], n), stop, 10, d[k - 1]).reason)
    assert first == first_stop
    verdict = growth_stop(rows(d[:first], a[:first], n), stop, 10, d[first - 1])
    assert verdict.reason == "plateau"
    line = verdict.info["plateau_fit"]  # the line recorded (and drawn) is the one over the widened window
    assert line["from"] == pytest.approx(d[first - (11 if n == 144 else 5)])
    assert line["min_span"] == pytest.approx(resolvable_span(n, 0.005, 0.1))
    if n == 144:
        short = growth_stop(rows(d[:11], a[:11], n), stop, 10, d[10])
        assert short.reason is None and "resolve a gain of 0.005 per doubling only over 3.2" in \
            short.info["plateau_status"]
        off = StopConfig()  # the default, --no-plateau-resolve: the last 5 points, whatever they stand for
        assert growth_stop(rows(d[:6], a[:6], n), off, 10, d[5]).reason == "plateau"
        rule = STOP_RULES.get("plateau")  # the rule itself, not only the fallback, reads the setting
        six = [Observation(x, y, n) for x, y in zip(d[:6], a[:6], strict=True)]
        assert rule(six, stop_context(off, 10)).stop and not rule(six, stop_context(stop, 10)).stop


def test_a_small_validation_set_that_stops_rising_does_not_stop_growth_while_its_resolved_window_still_rises():
    """The validation accuracies (of 144) of a digits run from a 1% seed: they stop moving at density 0.075 while
    test accuracy, on 2.5 times as many samples, kept rising to the sweep's knee at 0.32. The last 5 points
    stopped that run at 0.228; the window of 3.2 doublings still sees the rise there and keeps growing."""
    correct = [37, 102, 126, 133, 136, 137, 138, 140, 140, 141, 141, 141, 141, 141, 141]
    d = [0.01 * 1.25 ** i for i in range(len(correct))]
    history = rows(d, [c / 144 for c in correct], 144)
    assert growth_stop(history, StopConfig(), 10, d[-1]).reason == "plateau"  # the default: the last 5 points
    kept = growth_stop(history, StopConfig(plateau_resolve=True), 10, d[-1])
    assert kept.reason is None and "is not below 0.005" in kept.info["plateau_status"]
    assert kept.info["plateau_fit"]["from"] < 0.0244 * 1.01 and kept.info["plateau_fit"]["slope"] > 0.005


def test_without_a_span_to_reach_the_window_is_the_last_points_whatever_their_densities():
    from pwmpr.stop import plateau_reached
    from pwmpr.stop.plateau import plateau_window

    points = [Observation(d, 0.9) for d in (0.1, 0.2, 0.4, 0.3, 0.2, 0.1)]  # a caller's points, not in order
    assert plateau_window(points, 5) == points[1:]
    assert plateau_reached(points, tol=0.005, window=5, consecutive=2).stop  # flat: stops, as without a span


def test_plateau_rule_needs_a_tolerance():
    assert not STOP_RULES.get("plateau")([Observation(0.01 * 2 ** i, 0.8) for i in range(8)],
                                         StopContext(plateau_tol=0)).stop


def test_the_row_that_the_default_rule_stops_on_explains_itself():
    # What the run folder's curve.png and console say is read from the stopping row: it must name the test's verdict.
    from pwmpr.plot import explain_stop

    d, a = doubling_curve(0.0, 6)
    history = rows(d, a)
    verdict = growth_stop(history, StopConfig(), 10, d[-1])
    history[-1].update(verdict.info, decision=verdict.reason)
    assert verdict.reason == "plateau"
    assert "gain per doubling of density" in verdict.info["plateau_status"]
    assert "gain per doubling of density" in explain_stop(history, "plateau")


def test_a_stop_context_and_the_stop_config_have_the_same_defaults():
    """``StopContext`` is what a rule reads, built from ``StopConfig`` by ``stop_context``; used directly, its
    defaults must be the config's, or a rule called by hand decides otherwise than a run."""
    import dataclasses

    context = {f.name: f.default for f in dataclasses.fields(StopContext)}
    config = StopConfig()
    shared = [name for name in context if hasattr(config, name)]
    assert {"tol", "alpha", "plateau_tol", "plateau_resolve", "min_points", "consecutive"} <= set(shared)
    assert {name: context[name] for name in shared} == {name: getattr(config, name) for name in shared}


def test_a_flat_curve_at_chance_is_no_plateau():
    """A network whose validation accuracy is not above chance has not started to learn: a flat curve there is
    held back from stopping growth, and stops it once the same curve stands above chance. By hand: 10 classes,
    3,200 samples, alpha 0.1: chance + z_0.9 sqrt(0.1 x 0.9 / 3200) = 0.1 + 1.2816 x 0.0053033 = 0.10680."""
    d = [0.01 * 1.25**k for k in range(12)]

    def verdict(acc):
        rows = [{"stage": "phase", "density": x, "val_acc": acc, "val_n": 3200} for x in d]
        return growth_stop(rows, StopConfig(), 10, d[-1])

    held = verdict(0.1)
    assert held.reason is None and held.info["chance_status"].startswith("plateau held back: validation accuracy")
    assert verdict(0.1066).reason is None  # just below the margin
    assert verdict(0.1070).reason == "plateau" and "chance_status" not in verdict(0.1070).info
    assert verdict(0.5).reason == "plateau"
    paper = StopConfig(rule="gain", plateau_tol=0)  # any rule: the gain rule is held back the same way
    rows = [{"stage": "phase", "density": x, "val_acc": 0.1, "val_n": 3200} for x in d]
    assert growth_stop(rows, paper, 10, d[-1]).reason is None


def test_without_a_validation_size_or_classes_only_accuracy_at_or_below_chance_is_held_back():
    from pwmpr.stop.decision import above_chance, chance_margin

    assert chance_margin(Observation(0.1, 0.1, None), 0.1, 0.1) == 0.0
    assert not above_chance(Observation(0.1, 0.1, None), 0.1, 0.1)
    assert above_chance(Observation(0.1, 0.1001, None), 0.1, 0.1)
    assert above_chance(Observation(0.1, 0.0, 100), 0.0, 0.1)  # chance unknown: never held back


def test_chance_is_the_commonest_class_when_the_validation_set_is_not_balanced():
    """Guessing the commonest class scores its share: a flat curve at that share is held back too (12% here, over
    the 10% of 10 balanced classes plus the margin), and one clearly above it stops."""
    d = [0.01 * 1.25**k for k in range(12)]

    def verdict(acc, majority):
        rows = [{"stage": "phase", "density": x, "val_acc": acc, "val_n": 3200, "val_majority": majority} for x in d]
        return growth_stop(rows, StopConfig(), 10, d[-1])

    assert verdict(0.12, None).reason == "plateau"  # 1 / 10 classes: 0.12 is above chance
    assert verdict(0.12, 0.12).reason is None and "not above chance 0.12" in verdict(0.12, 0.12).info["chance_status"]
    assert verdict(0.14, 0.12).reason == "plateau"


def test_the_validation_sets_commonest_class_share_is_recorded():
    import torch

    from pwmpr.data import DataBundle, TensorSplit

    split = TensorSplit(torch.zeros(5, 2), torch.tensor([0, 1, 1, 1, 2]))
    bundle = DataBundle("x", 3, (2,), "mlp", split, split, split)
    assert bundle.majority_share("val") == pytest.approx(0.6)
    assert DataBundle("x", 3, (2,), "mlp", split, object(), split).majority_share("val") is None


def test_the_commonest_class_share_leaves_ignored_positions_out_and_one_class_tells_nothing():
    import torch

    from pwmpr.data import DataBundle, TensorSplit

    tokens = TensorSplit(torch.zeros(2, 4), torch.tensor([[-100, -100, -100, 3], [-100, -100, 5, 3]]))
    assert DataBundle("t", 8, (4,), "mlp", tokens, tokens, tokens).majority_share("val") == pytest.approx(2 / 3)
    d = [0.01 * 1.25**k for k in range(12)]
    rows = [{"stage": "phase", "density": x, "val_acc": 1.0, "val_n": 500, "val_majority": 1.0} for x in d]
    assert growth_stop(rows, StopConfig(), 10, d[-1]).reason == "plateau"  # one class: the guard stands aside


def test_no_chance_guard_lets_a_flat_curve_at_chance_stop_as_before():
    d = [0.01 * 1.25**k for k in range(12)]
    rows = [{"stage": "phase", "density": x, "val_acc": 0.1, "val_n": 3200} for x in d]
    assert growth_stop(rows, StopConfig(), 10, d[-1]).reason is None
    off = growth_stop(rows, StopConfig(chance_guard=False), 10, d[-1])
    assert off.reason == "plateau" and "chance_status" not in off.info

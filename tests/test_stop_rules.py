"""The stop rules' decisions on synthetic noisy accuracy-density curves with a known knee.

The true curve is P(rho) = 0.95 - 0.5 exp(-rho / 0.03) (10 classes): growing on from rho gains less than one
point once rho > 0.03 ln(50) = 0.117. Points are drawn with binomial noise of a 400-sample validation split and
densities grow by x1.25 per phase from 0.01, as PWMPR's do.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pwmpr.stop import STOP_RULES, Observation, StopContext, curve_posterior, fit_saturation, should_stop
from pwmpr.stop.rules import resolvable_gain

N_VAL = 400
KNEE = 0.03 * math.log(50.0)  # gain to density 1 below one point from here on
DENSITIES = [0.01 * 1.25**k for k in range(22)]
CTX = StopContext(chance=0.1, cap=1.0, min_points=4, consecutive=2, tol=0.01, alpha=0.1)


def true_curve(rho):
    return 0.95 - 0.5 * np.exp(-np.asarray(rho) / 0.03)


def noisy_points(densities, seed, curve=true_curve, n=N_VAL):
    rng = np.random.default_rng(seed)
    return [Observation(d, rng.binomial(n, float(curve(d))) / n, n) for d in densities]


def first_stop(rule, points, ctx=CTX):
    """Index (number of points) at which ``rule`` first says stop, or None."""
    for k in range(1, len(points) + 1):
        if STOP_RULES.get(rule)(points[:k], ctx).stop:
            return k
    return None


@pytest.mark.parametrize("seed", range(8))
def test_gain_rule_does_not_stop_on_the_rising_part(seed):
    rising = [d for d in DENSITIES if d < 0.6 * KNEE]  # 8 points, accuracy still rising 2-4 points per phase
    assert len(rising) >= 7
    assert first_stop("gain", noisy_points(rising, seed)) is None


def test_gain_rule_stops_within_two_steps_past_the_knee():
    past = next(i for i, d in enumerate(DENSITIES) if d > KNEE)  # index of the first point past the knee
    stops = [first_stop("gain", noisy_points(DENSITIES[:21], seed)) for seed in range(16)]
    assert all(k is not None for k in stops), stops  # every run stops before density 1
    # Never before the curve is within 2 points of its plateau ...
    assert all(true_curve(DENSITIES[k - 1]) >= 0.95 - 0.02 for k in stops), stops
    # ... and, for at least 12 of 16 noise draws, at most 2 growth steps after the first point past the knee (the
    # rest are noise draws where the power-law family keeps a share of the posterior a few steps longer).
    on_time = [k - 1 <= past + 2 for k in stops]
    assert sum(on_time) >= 12, (stops, past)


def test_gain_rule_stops_soon_when_the_seed_is_past_the_knee():
    # Flat points from density 0.2 (noise 1.1 points each): nothing to gain, but 5 noisy points cannot yet rule out
    # a gain of one point with 90% confidence; a few more can.
    earliest = CTX.min_points + CTX.consecutive - 1
    stops = [first_stop("gain", noisy_points([0.2 * 1.25**k for k in range(8)], seed)) for seed in range(12)]
    assert all(k is None or k >= earliest for k in stops)
    assert sum(k is not None and k <= earliest + 3 for k in stops) >= 10, stops


def test_gain_rule_respects_tolerance_and_confidence():
    points = noisy_points(DENSITIES[:14], 3)  # up to density 0.15: about 0.5 points below the plateau
    post = curve_posterior(points, cap=1.0, chance=0.1)
    p_one = post.prob_gain_below(points[-1].density, 0.01)
    p_tenth = post.prob_gain_below(points[-1].density, 0.001)
    assert p_tenth < p_one  # a stricter tolerance is never more certain
    strict = StopContext(chance=0.1, tol=0.001, alpha=0.1)
    # 400 samples cannot resolve 0.1 point: the rule decides at the gain they resolve (docs/method.md, "gain").
    floor = resolvable_gain(points, 0.1, 4)
    assert floor > 0.001 and STOP_RULES.get("gain")(points, strict).tol == pytest.approx(floor)
    # A million samples resolve it: the rule keeps 0.1 point and, half a point below the plateau, grows on.
    precise = noisy_points(DENSITIES[:14], 3, n=10**6)
    decision = STOP_RULES.get("gain")(precise, strict)
    assert decision.tol == 0.001 and not decision.stop


def test_posterior_band_covers_the_true_curve():
    points = noisy_points(DENSITIES[:12], 0)
    post = curve_posterior(points, cap=1.0, chance=0.1)
    grid = np.array(DENSITIES[:12])
    lo, mid, hi = post.quantiles(grid)
    truth = true_curve(grid)
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.8  # a 90% band
    assert np.max(np.abs(mid - truth)) < 0.03
    w = post.family_weights()
    assert w["exp"] > w["power"]  # the data come from the exponential family


def test_posterior_is_bounded_by_what_accuracy_can_be():
    points = noisy_points(DENSITIES[:6], 1)  # the steep early rise only
    post = curve_posterior(points, cap=1.0, chance=0.1)
    at_cap = post.predict([1.0])[:, 0]
    assert at_cap.max() <= 1.0 + 1e-12 and at_cap.min() >= 0.1 - 1e-12
    assert np.all(post.rise >= 0)


def test_posterior_noise_follows_the_validation_size():
    # The same accuracies seen on 10x more validation samples give a narrower band.
    small = [Observation(p.density, p.accuracy, 100) for p in noisy_points(DENSITIES[:10], 2)]
    large = [Observation(p.density, p.accuracy, 10_000) for p in small]
    width = [float(np.mean(np.diff(curve_posterior(pts, chance=0.1).quantiles(DENSITIES[:10], (0.05, 0.95)),
                                   axis=0))) for pts in (small, large)]
    assert width[1] < width[0]


def test_posterior_summary_is_json_and_recorded_decision_carries_it():
    points = noisy_points(DENSITIES[:8], 0)
    decision = STOP_RULES.get("gain")(points, CTX)
    d = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    post = d["posterior"]
    assert len(post["rho"]) == len(post["q05"]) == len(post["q95"])
    assert post["rho"][0] == pytest.approx(DENSITIES[0]) and post["rho"][-1] == pytest.approx(1.0)
    assert all(a <= b <= c for a, b, c in zip(post["q05"], post["q50"], post["q95"], strict=True))
    assert 0.0 <= post["p_gain_below_tol"] <= 1.0


@pytest.mark.parametrize("bad", [[], [Observation(0.1, 0.5, 100)] * 2, [Observation(0.1, 0.5, 100)] * 5,
                                 [Observation(0.1, float("nan"), 100)] * 5])
def test_gain_rule_keeps_growing_on_what_it_cannot_use(bad):
    decision = STOP_RULES.get("gain")(bad, CTX)
    assert decision.stop is False and decision.reason


# --- the paper's fit, bounded ----------------------------------------------------------------------------------
# A concave early rise, still gaining 1-5 points per phase (as measured on real data from a 1% seed).
EARLY_X = [0.01 * 1.25**k for k in range(6)]
EARLY_Y = [0.45, 0.50, 0.52, 0.53, 0.535, 0.54]


def test_unbounded_fit_claims_nonsense_on_an_early_rise():
    fit = fit_saturation(EARLY_X, EARLY_Y)
    assert fit.identifiable and fit.p0 < 0.0  # far below chance
    assert fit.rho_star < EARLY_X[0]  # "saturated" before the seed density
    assert should_stop(list(zip(EARLY_X, EARLY_Y, strict=True))).stop


def test_bounded_fit_gives_no_estimate_for_the_same_points():
    noise = [math.sqrt(y * (1 - y) / 1000) for y in EARLY_Y]
    for k in (5, 6):
        fit = fit_saturation(EARLY_X[:k], EARLY_Y[:k], bounds=(0.1, 1.0), noise=noise[:k])
        assert fit.p0 >= 0.1 - 1e-9 and fit.p_inf <= 1.0 + 1e-9
    pts = [Observation(x, y, 1000) for x, y in zip(EARLY_X, EARLY_Y, strict=True)]
    assert not STOP_RULES.get("paper")(pts, StopContext(chance=0.1)).stop
    assert STOP_RULES.get("paper-unbounded")(pts, StopContext(chance=0.1)).stop


def test_bounded_fit_rejects_a_plateau_below_the_best_point():
    # A clean saturating curve with one point 3 points above it: the fitted plateau sits 6 standard errors below it.
    y = true_curve(DENSITIES[:16])
    y[12] += 0.03
    assert fit_saturation(DENSITIES[:16], y).identifiable  # unchecked, the fit is "fine"
    fit = fit_saturation(DENSITIES[:16], y, bounds=(0.1, 1.0), noise=0.005)
    assert not fit.identifiable and "below the best observed" in fit.reason


def test_bounded_fit_rejects_rho_star_below_the_observed_densities():
    x = [0.2, 0.25, 0.3125, 0.39, 0.488]
    y = [0.90, 0.9, 0.9, 0.9, 0.91]  # flat with a last uptick: any rise was over before the first point
    fit = fit_saturation(x, y, bounds=(0.1, 1.0), noise=0.001)
    assert fit is None or not fit.identifiable


def test_each_plausibility_guard_names_its_own_contradiction():
    from pwmpr.stop.saturation import _implausible

    x, y = np.array([0.05, 0.1, 0.2]), np.array([0.80, 0.86, 0.90])
    sigma = np.full(3, 0.01)
    assert _implausible(x, y, sigma, p_inf=0.93, rho_star=0.15, high=1.0) == ""
    assert "above the highest possible accuracy" in _implausible(x, y, sigma, p_inf=1.03, rho_star=0.15, high=1.0)
    assert _implausible(x, y, sigma, p_inf=1.015, rho_star=0.15, high=1.0) == ""  # within 2 s.e. of the bound
    assert "below the best observed" in _implausible(x, y, sigma, p_inf=0.87, rho_star=0.15, high=1.0)
    assert "below every observed density" in _implausible(x, y, sigma, p_inf=0.93, rho_star=0.04, high=1.0)


def test_bounded_fit_still_recovers_a_clean_curve():
    fit = fit_saturation(DENSITIES[:16], true_curve(DENSITIES[:16]), bounds=(0.1, 1.0), noise=0.001)
    assert fit.identifiable
    assert fit.p0 == pytest.approx(0.45, abs=1e-3) and fit.beta == pytest.approx(1 / 0.03, rel=1e-3)


def test_none_rule_never_stops():
    assert not STOP_RULES.get("none")(noisy_points(DENSITIES, 0), CTX).stop


# --- failures of the fit: numerical ones are recorded, bugs propagate -------------------------------------------


def _raising(exc):
    def fit(*args, **kwargs):
        raise exc
    return fit


def test_gain_rule_records_a_numerical_failure_and_keeps_growing(monkeypatch):
    import pwmpr.stop.rules as rules

    monkeypatch.setattr(rules, "curve_posterior", _raising(np.linalg.LinAlgError("Matrix is not positive definite")))
    decision = STOP_RULES.get("gain")(noisy_points(DENSITIES, 0), CTX)
    assert not decision.stop and decision.failed == "LinAlgError: Matrix is not positive definite"
    assert decision.failed in decision.reason and json.loads(json.dumps(decision.to_dict()))["failed"]


@pytest.mark.parametrize("rule", ["gain", "paper"])
def test_a_bug_in_the_fit_propagates(monkeypatch, rule):
    import pwmpr.stop.rules as rules
    import pwmpr.stop.saturation as saturation

    monkeypatch.setattr(rules, "curve_posterior", _raising(TypeError("unsupported operand type(s)")))
    monkeypatch.setattr(saturation, "fit_saturation", _raising(TypeError("unsupported operand type(s)")))
    with pytest.raises(TypeError, match="unsupported operand"):
        STOP_RULES.get(rule)(noisy_points(DENSITIES, 0), CTX)


def test_repeated_fit_failures_end_the_run_with_an_error(monkeypatch, tmp_path):
    # The fit fails from the third phase on (the gain rule fits from 3 points): phases 3 and 4 record it in
    # their history rows and keep growing; phase 5 is the third failure in a row, and the run stops with an error.
    from typer.testing import CliRunner

    import pwmpr.stop.rules as rules
    from pwmpr.cli.app import app

    monkeypatch.setattr(rules, "curve_posterior", _raising(FloatingPointError("overflow in exp")))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["grow", "--data", "digits", "--model", "mlp", "--max-train", "300",
                                      "--phase-epochs", "1", "--final-epochs", "1", "--no-tau-core", "--stop", "gain",
                                      "--plateau-tol", "0", "--max-cost", "0", "--max-phases", "8", "-q",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "failed to fit in 3 phases in a row (last: FloatingPointError: overflow in exp)" in result.output
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r.get("stop_fit_failed") for r in rows] == [None, None, "FloatingPointError: overflow in exp",
                                                        "FloatingPointError: overflow in exp"]
    assert [r["decision"] for r in rows] == ["grow"] * 4

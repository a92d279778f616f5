"""Stopping rule: the saturation fit recovers known curves, rho* = ln 20 / beta, should_stop never raises."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pwmpr.errors import PwmprError
from pwmpr.stop import SaturationFit, StopDecision, fit_saturation, plateau_gain, plateau_reached, should_stop

LN20 = 2.995732273553991  # ln(20), written out


def curve(x, p0=0.5, a=0.4, beta=20.0):
    return p0 + a * (1.0 - np.exp(-beta * np.asarray(x, dtype=np.float64)))


# 0.02 * 1.25^k, k = 0..11: 0.02, 0.025, 0.03125, 0.0390625, 0.048828, 0.061035, 0.076294, 0.095367, 0.119209,
# 0.149012, 0.186265, 0.232831 (the densities of a gamma = 0.25 run from a 2% seed).
DENSITIES = 0.02 * 1.25 ** np.arange(12)


# -- the fit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 5, 8, 12])
def test_fit_recovers_exact_curve_at_small_densities(n):
    fit = fit_saturation(DENSITIES[:n], curve(DENSITIES[:n]))
    assert fit is not None and fit.identifiable, fit
    assert fit.p0 == pytest.approx(0.5, abs=1e-6)
    assert fit.a == pytest.approx(0.4, abs=1e-6)
    assert fit.beta == pytest.approx(20.0, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.n_points == n
    assert fit.rho_star == pytest.approx(LN20 / 20.0, rel=1e-6)  # 0.149787


def test_fit_recovers_exact_curve_at_large_densities_in_percent():
    x = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    fit = fit_saturation(x, curve(x, p0=60.0, a=30.0, beta=5.0))
    assert fit is not None and fit.identifiable
    assert (fit.p0, fit.a, fit.beta) == pytest.approx((60.0, 30.0, 5.0), rel=1e-6)
    assert fit.p_inf == pytest.approx(90.0, rel=1e-6)


def test_fit_recovers_noisy_curve_within_stated_tolerance():
    # Gaussian noise of sd 0.003 (0.3 accuracy points) on 12 points, fixed seed. Tolerances: the true values lie
    # within 4 standard errors, beta within 10% and P0, A within 0.02 (measured: beta 19.30 +/- 0.69).
    rng = np.random.default_rng(12345)
    fit = fit_saturation(DENSITIES, curve(DENSITIES) + rng.normal(0.0, 0.003, DENSITIES.size))
    assert fit is not None and fit.identifiable
    for name, true in (("p0", 0.5), ("a", 0.4), ("beta", 20.0)):
        assert abs(getattr(fit, name) - true) <= 4 * fit.stderr[name], (name, getattr(fit, name), fit.stderr[name])
    assert fit.beta == pytest.approx(20.0, rel=0.10)
    assert fit.p0 == pytest.approx(0.5, abs=0.02) and fit.a == pytest.approx(0.4, abs=0.02)
    assert 0.99 < fit.r2 < 1.0


def test_fit_does_not_depend_on_point_order():
    order = np.array([3, 0, 4, 1, 2])
    fit = fit_saturation(DENSITIES[:5][order], curve(DENSITIES[:5])[order])
    assert fit is not None and fit.beta == pytest.approx(20.0, rel=1e-6)


def test_rho_star_is_ln20_over_beta_and_95_percent_of_the_rise():
    fit = SaturationFit(p0=0.1, a=0.8, beta=10.0)
    assert fit.rho_star == pytest.approx(0.2995732273553991)
    assert fit.predict(fit.rho_star) == pytest.approx(0.1 + 0.95 * 0.8)
    assert fit.predict(0.0) == pytest.approx(0.1)
    assert fit.predict(1e9) == pytest.approx(0.9)
    np.testing.assert_allclose(fit.predict([0.0, 0.1]), [0.1, 0.1 + 0.8 * (1 - math.exp(-1.0))])
    assert SaturationFit(p0=0.0, a=1.0, beta=0.0).rho_star == math.inf


def test_to_dict_is_strict_json():
    fit = fit_saturation(DENSITIES[:6], curve(DENSITIES[:6]))
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["family"] == "saturating-exp" and d["identifiable"] is True
    assert d["rho_star"] == pytest.approx(LN20 / 20.0, rel=1e-6)
    assert set(d["stderr"]) == {"p0", "a", "beta"}
    bad = fit_saturation(DENSITIES[:3], curve(DENSITIES[:3]))  # infinite covariance -> None in JSON
    d = json.loads(json.dumps(bad.to_dict(), allow_nan=False))
    assert d["stderr"]["beta"] is None and d["identifiable"] is False


def test_three_points_fit_but_give_no_estimate():
    fit = fit_saturation(DENSITIES[:3], curve(DENSITIES[:3]))
    assert fit is not None and not fit.identifiable and "covariance" in fit.reason


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([0.1, 0.2], [0.5, 0.6]),  # fewer than 3 points
        ([], []),
        ([0.1, 0.2, float("nan"), 0.4], [0.5, 0.6, 0.7, 0.8]),
        ([0.1, 0.2, 0.3, 0.4], [0.5, float("inf"), 0.7, 0.8]),
        ([0.1, 0.1, 0.1, 0.1], [0.5, 0.6, 0.7, 0.8]),  # no spread in density
        ([-0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]),  # not a density
    ],
)
def test_fit_returns_none_when_no_fit_can_be_made(x, y):
    assert fit_saturation(x, y) is None


def test_fit_rejects_mismatched_input():
    with pytest.raises(PwmprError, match="same length"):
        fit_saturation([0.1, 0.2, 0.3], [0.5, 0.6])
    with pytest.raises(PwmprError, match="numbers"):
        fit_saturation([0.1, 0.2, "x"], [0.5, 0.6, 0.7])


@pytest.mark.parametrize(
    ("name", "y", "reason"),
    [
        # beta * max density = 0.5 * 0.233 = 0.12 with noise: a straight line as far as the points can tell.
        ("linear", curve(DENSITIES, beta=0.5) + np.random.default_rng(0).normal(0, 0.002, 12), "plateau"),
        ("straight line", 0.5 + 3.0 * DENSITIES, "linear regime"),
        ("flat", np.full(12, 0.9), "no rise"),
        ("falling", 0.9 - DENSITIES, "no rise"),
    ],
)
def test_unidentifiable_plateau_is_no_estimate(name, y, reason):
    fit = fit_saturation(DENSITIES, y)
    assert fit is not None and not fit.identifiable, name
    assert reason in fit.reason
    assert not should_stop(list(zip(DENSITIES, y, strict=True))).stop


def test_large_stderr_on_beta_is_no_estimate():
    # A slow curve (beta = 2, rho* = 1.5) seen at 5 small densities with noise: the noise fakes curvature, the fit
    # says beta = 26 +/- 16. By default (stderr <= 0.5 beta) that is no estimate; a looser limit accepts it.
    x = DENSITIES[:5]
    y = curve(x, beta=2.0) + np.random.default_rng(0).normal(0, 0.003, 5)
    fit = fit_saturation(x, y)
    assert fit is not None and not fit.identifiable and "standard error" in fit.reason, fit
    assert 0.5 * fit.beta < fit.stderr["beta"] < fit.beta
    assert fit_saturation(x, y, max_rel_stderr=1.0).identifiable


# -- should_stop ------------------------------------------------------------------------------------


def history(n, beta=20.0, as_dicts=False):
    pts = [(float(d), float(curve(d, beta=beta))) for d in DENSITIES[:n]]
    return [{"phase": i, "density": d, "accuracy": acc} for i, (d, acc) in enumerate(pts)] if as_dicts else pts


@pytest.mark.parametrize("as_dicts", [False, True])
def test_should_stop_needs_two_consecutive_refits(as_dicts):
    # rho* = ln 20 / 20 = 0.149787 on every prefix of >= 4 exact points. Densities 0.119 (9 points) and
    # 0.149012 (10) are below it, 0.186 (11) is the first above: one refit meets it, the one before does not.
    # 0.233 (12) makes two in a row.
    for n in range(1, 11):
        assert not should_stop(history(n, as_dicts=as_dicts)).stop, n
    only_one = should_stop(history(11, as_dicts=as_dicts))
    assert not only_one.stop and "0.149 < rho*" in only_one.reason and "newer refit" in only_one.reason
    decision = should_stop(history(12, as_dicts=as_dicts))
    assert decision.stop, decision.reason
    assert decision.rho_star == pytest.approx(LN20 / 20.0, rel=1e-6)
    assert decision.fit.n_points == 12 and decision.n_points == 12


def test_should_stop_needs_min_points_in_each_refit():
    # beta = 100: rho* = 0.029957, below every density from the 3rd point (0.03125) on. With 4 points the newest
    # refit meets it but the one before has only 3 points, so the earliest stop is the 5th point.
    assert not should_stop(history(3, beta=100.0)).stop
    four = should_stop(history(4, beta=100.0))
    assert not four.stop and "need 5 points" in four.reason
    assert four.fit is not None and four.fit.identifiable  # the fit is still reported for the log
    assert should_stop(history(5, beta=100.0)).stop
    # The knobs: one refit on >= 3 points is enough with consecutive=1, min_points=3 ... but 3 exact points give an
    # infinite covariance (no estimate), so the 4th point is the first stop.
    assert not should_stop(history(3, beta=100.0), min_points=3, consecutive=1).stop
    assert should_stop(history(4, beta=100.0), min_points=3, consecutive=1).stop
    assert not should_stop(history(5, beta=100.0), min_points=5).stop
    assert should_stop(history(6, beta=100.0), min_points=5).stop
    assert not should_stop(history(5, beta=100.0), consecutive=3).stop


def test_should_stop_ignores_extra_keys_and_accepts_numpy_scalars():
    h = [{"density": np.float32(d), "accuracy": np.float64(a), "epoch": 10} for d, a in history(12)]
    assert should_stop(h).stop


class _Explodes:
    def __float__(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        5,
        "abcdef",
        [(0.1,)],
        [("a", "b")] * 6,
        [{"density": 0.1}] * 6,
        [{"accuracy": 0.1}] * 6,
        ["0.1, 0.5"] * 6,
        [None] * 6,
        [*history(11), (float("nan"), 0.9)],
        [*history(11), (0.3, float("nan"))],
        [*history(11), (0.3, float("inf"))],
        [(0.1, 0.5)] * 8,  # no spread in density: no fit
        [(d, 0.9) for d in DENSITIES],  # flat: no rise
    ],
)
def test_should_stop_never_raises_and_keeps_growing(bad):
    decision = should_stop(bad)
    assert isinstance(decision, StopDecision)
    assert decision.stop is False and decision.reason
    json.dumps(decision.to_dict(), allow_nan=False)


def test_should_stop_keeps_growing_when_the_fit_fails(monkeypatch):
    import pwmpr.stop.saturation as stop

    monkeypatch.setattr(stop, "fit_saturation", lambda *a, **k: None)
    decision = should_stop(history(12))
    assert not decision.stop and "no fit" in decision.reason


def test_should_stop_records_a_numerical_failure_of_the_fit(monkeypatch, caplog):
    import numpy as np

    import pwmpr.stop.saturation as stop

    def broken(*a, **k):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(stop, "fit_saturation", broken)
    decision = should_stop(history(12))
    assert not decision.stop and decision.failed == "LinAlgError: SVD did not converge"
    assert decision.to_dict()["failed"] == decision.failed
    assert "saturation fit failed (LinAlgError: SVD did not converge)" in caplog.text  # logged, not hidden


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), AttributeError("no attribute"),
                                 KeyError("beta"), RuntimeError("boom")])
def test_should_stop_lets_a_bug_in_the_fit_propagate(monkeypatch, bug):
    import pwmpr.stop.saturation as stop

    def broken(*a, **k):
        raise bug

    monkeypatch.setattr(stop, "fit_saturation", broken)
    with pytest.raises(type(bug)):
        should_stop(history(12))


def test_should_stop_lets_a_bug_in_reading_the_history_propagate():
    with pytest.raises(RuntimeError, match="boom"):
        should_stop([*history(11), (_Explodes(), 0.9)])


def test_decision_to_dict():
    d = json.loads(json.dumps(should_stop(history(12)).to_dict(), allow_nan=False))
    assert d["stop"] is True and d["n_points"] == 12
    assert d["rho_star"] == pytest.approx(LN20 / 20.0, rel=1e-6)
    assert d["fit"]["beta"] == pytest.approx(20.0, rel=1e-6)
    d = should_stop(history(2)).to_dict()
    assert d["stop"] is False and d["fit"] is None and d["rho_star"] is None


# --- pwmpr's plateau fallback ------------------------------------------------------------------------------


def test_plateau_gain_is_the_slope_per_doubling_by_hand():
    # acc = 0.9 + 0.02 * log2(d / 0.05): exactly 2 points per doubling, no residual.
    d = [0.05, 0.1, 0.2, 0.4]
    slope, se = plateau_gain(d, [0.90, 0.92, 0.94, 0.96])
    assert slope == pytest.approx(0.02) and se == pytest.approx(0.0, abs=1e-12)


def test_plateau_stops_on_flat_points_only_after_two_consecutive_refits():
    d = [0.05 * 1.25**k for k in range(7)]
    flat = [0.93, 0.935, 0.932, 0.934, 0.931, 0.933, 0.932]
    assert not plateau_reached(list(zip(d[:5], flat[:5], strict=True))).stop  # needs 6 points
    verdict = plateau_reached(list(zip(d[:6], flat[:6], strict=True)))
    assert verdict.stop and "plateau" in verdict.reason
    rising = [0.5 + 0.1 * k for k in range(7)]  # 0.1 per 1.25x: far above one point per doubling
    assert not plateau_reached(list(zip(d, rising, strict=True))).stop
    assert not plateau_reached(list(zip(d, flat, strict=True)), tol=0).stop
    assert not plateau_reached([("x", None)] * 7).stop

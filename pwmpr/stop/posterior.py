"""A posterior over the accuracy-density curve, and the gain rule built on it (docs/method.md, "gain").

Two curve families (``exp``, ``power``), each ``P(rho) = P_cap - r h(rho)`` with ``P_cap`` the accuracy at
``max_density``; exact Gaussian posteriors on a grid of rates, truncated to plausible accuracies, averaged over
the families. The gain rule stops when ``Pr(P_cap - P(rho_now) < tol) >= 1 - alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pwmpr.stop.decision import Observation, json_float

FAMILIES = ("exp", "power")
_RATE_GRID = {
    # beta * max observed density: from a straight line over the points to saturation within the first step
    "exp": np.logspace(-1.5, 2.5, 41),
    # alpha: from nearly log-linear growth to a near step
    "power": np.logspace(-2.0, 1.0, 31),
}
_SAMPLES_PER_RATE = 200
_DEFAULT_NOISE = 0.01  # standard error of an accuracy whose validation size is unknown (then widened by the data)
_BAND = (0.05, 0.5, 0.95)  # quantiles drawn as the band and recorded in history.jsonl


def _basis(family: str, rate: float, rho: np.ndarray, x_max: float) -> np.ndarray:
    """The family's decreasing basis g(rho) at one rate (``exp``: rate is beta * x_max)."""
    if family == "exp":
        return np.exp(-rate * rho / x_max)
    return rho ** (-rate)


@dataclass
class CurvePosterior:
    """Weighted samples of the accuracy-density curve given the points.

    Attributes:
        densities, accuracies, stderr: the points, sorted by density, and the noise used for each.
        cap: the largest density growth may reach; ``P_cap`` is the accuracy there.
        chance: the lowest accuracy a classifier can be expected to have (1 / classes).
        family, rate, p_cap, rise, weight: one entry per sample (weights normalised).
        noise_scale: the Birge ratio applied to the binomial noise (>= 1 when the noise is known).
    """

    densities: np.ndarray
    accuracies: np.ndarray
    stderr: np.ndarray
    cap: float
    chance: float
    family: np.ndarray
    rate: np.ndarray
    p_cap: np.ndarray
    rise: np.ndarray
    weight: np.ndarray
    noise_scale: float

    def _h(self, rho: np.ndarray) -> np.ndarray:
        """h(rho) for every sample: (n_samples, len(rho))."""
        x_lo, x_hi = float(self.densities.min()), float(self.densities.max())
        out = np.empty((self.rate.size, rho.size))
        for fam in FAMILIES:
            sel = self.family == fam
            if not sel.any():
                continue
            rates = self.rate[sel][:, None]
            g = np.exp(-rates * rho[None, :] / x_hi) if fam == "exp" else rho[None, :] ** (-rates)
            g_cap = np.exp(-rates * self.cap / x_hi) if fam == "exp" else self.cap ** (-rates)
            g_lo = np.exp(-rates * x_lo / x_hi) if fam == "exp" else x_lo ** (-rates)
            g_hi = np.exp(-rates) if fam == "exp" else x_hi ** (-rates)
            out[sel] = (g - g_cap) / (g_lo - g_hi)
        return out

    def predict(self, rho: Sequence[float] | np.ndarray) -> np.ndarray:
        """Curve samples at ``rho``: (n_samples, len(rho))."""
        rho = np.atleast_1d(np.asarray(rho, dtype=np.float64))
        return self.p_cap[:, None] - self.rise[:, None] * self._h(rho)

    def quantiles(self, rho: Sequence[float] | np.ndarray, qs: Sequence[float] = _BAND) -> np.ndarray:
        """Weighted quantiles of the curve at each density: (len(qs), len(rho))."""
        return _weighted_quantiles(self.predict(rho), self.weight, qs)

    def gain(self, rho: float) -> np.ndarray:
        """Samples of the accuracy still to be gained by growing from density ``rho`` to the cap."""
        return self.rise * self._h(np.array([float(rho)]))[:, 0]

    def prob_gain_below(self, rho: float, tol: float) -> float:
        """Posterior probability that growing on from ``rho`` gains less than ``tol``."""
        return float(np.sum(self.weight[self.gain(rho) < tol]))

    def family_weights(self) -> dict[str, float]:
        """Posterior weight of each curve family."""
        return {fam: float(self.weight[self.family == fam].sum()) for fam in FAMILIES}

    def summary(self, rho_now: float, tol: float, n_grid: int = 24) -> dict[str, Any]:
        """A JSON-friendly record for history.jsonl: the band on a log grid up to the cap, and the gain."""
        lo = float(self.densities.min())
        grid = np.unique(np.concatenate([np.geomspace(lo, self.cap, n_grid), self.densities]))
        band = self.quantiles(grid)
        gain = _weighted_quantiles(self.gain(rho_now)[:, None], self.weight, _BAND)[:, 0]
        return {
            "rho": [round(float(r), 6) for r in grid],
            "q05": [round(float(v), 5) for v in band[0]],
            "q50": [round(float(v), 5) for v in band[1]],
            "q95": [round(float(v), 5) for v in band[2]],
            "gain_q05": json_float(float(gain[0])),
            "gain_q50": json_float(float(gain[1])),
            "gain_q95": json_float(float(gain[2])),
            "p_gain_below_tol": self.prob_gain_below(rho_now, tol),
            "tol": tol,
            "cap": self.cap,
            "noise_scale": json_float(self.noise_scale),
            "families": self.family_weights(),
        }


def _weighted_quantiles(samples: np.ndarray, weight: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles ``qs`` of each column of ``samples`` under sample ``weight``."""
    order = np.argsort(samples, axis=0)
    cum = np.cumsum(weight[order], axis=0)
    out = np.empty((len(qs), samples.shape[1]))
    for j in range(samples.shape[1]):
        idx = np.searchsorted(cum[:, j], np.asarray(qs) * cum[-1, j])
        out[:, j] = samples[order[np.minimum(idx, len(weight) - 1), j], j]
    return out


def curve_posterior(points: Sequence[Observation], *, cap: float = 1.0, chance: float = 0.0,
                    seed: int = 0) -> CurvePosterior | None:
    """The posterior over the accuracy-density curve given ``points`` (accuracies as fractions; ``n`` gives the noise).

    ``cap`` is the largest density growth may reach, ``chance`` the lowest plausible accuracy (1 / classes); the
    result is deterministic for a given ``seed``. None when there is nothing to fit: fewer than 3 points, a
    non-finite value, a density outside (0, cap], or all densities equal.
    """
    if len(points) < 3:
        return None
    pts = sorted(points, key=lambda p: p.density)
    x = np.array([p.density for p in pts], dtype=np.float64)
    y = np.array([p.accuracy for p in pts], dtype=np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or x.min() <= 0 or x.max() > cap * (1 + 1e-9):
        return None
    if x.max() - x.min() <= 1e-12 * x.max():
        return None
    known = [p.stderr for p in pts]
    sigma = np.array([s if s is not None else _DEFAULT_NOISE for s in known])
    noise_known = all(s is not None for s in known)
    x_lo, x_hi = float(x.min()), float(x.max())
    rng = np.random.default_rng(seed)

    fits = []  # per family: rates, means (R, 2), covariances (R, 2, 2), chi2 (R,), logdet (R,)
    for fam in FAMILIES:
        rates = _RATE_GRID[fam]
        g = np.stack([_basis(fam, r, x, x_hi) for r in rates])  # (R, n)
        g_cap = np.array([_basis(fam, r, np.array([cap]), x_hi)[0] for r in rates])
        g_lo = np.array([_basis(fam, r, np.array([x_lo]), x_hi)[0] for r in rates])
        g_hi = np.array([_basis(fam, r, np.array([x_hi]), x_hi)[0] for r in rates])
        h = (g - g_cap[:, None]) / (g_lo - g_hi)[:, None]  # (R, n): 0 at the cap, h(x_lo) - h(x_hi) = 1
        w = 1.0 / sigma**2
        # Weighted least squares of y = P_cap - r h for each rate: X = [1, -h].
        s11, s12, s22 = w.sum(), -(w * h).sum(axis=1), (w * h * h).sum(axis=1)
        b1, b2 = (w * y).sum(), -(w * h * y).sum(axis=1)
        det = s11 * s22 - s12**2
        mean = np.stack([(s22 * b1 - s12 * b2) / det, (s11 * b2 - s12 * b1) / det], axis=1)
        cov = np.stack([np.stack([s22, -s12], -1), np.stack([-s12, np.full_like(s22, s11)], -1)], 1) / det[:, None,
                                                                                                            None]
        resid = y[None, :] - mean[:, :1] + mean[:, 1:] * h
        chi2 = (w * resid**2).sum(axis=1)
        fits.append((fam, rates, h, mean, cov, chi2, np.log(det)))

    dof = max(len(x) - 3, 1)
    best_chi2 = min(float(f[5].min()) for f in fits)
    scale2 = best_chi2 / dof
    scale2 = max(1.0, scale2) if noise_known else max(scale2, 1e-6 / _DEFAULT_NOISE**2)

    fam_s, rate_s, pcap_s, rise_s, logw_s = [], [], [], [], []
    for fam, rates, _h, mean, cov, chi2, logdet in fits:
        # log evidence of each rate under a flat prior on (P_cap, r): -chi2/2 + log sqrt(det cov)
        log_ev = -chi2 / (2 * scale2) - 0.5 * logdet + math.log(scale2)
        chol = np.linalg.cholesky(cov * scale2)  # (R, 2, 2)
        z = rng.standard_normal((rates.size, _SAMPLES_PER_RATE, 2))
        theta = mean[:, None, :] + np.einsum("rij,rsj->rsi", chol, z)  # (R, S, 2)
        p_cap, rise = theta[..., 0], theta[..., 1]
        ok = (p_cap >= chance) & (p_cap <= 1.0) & (rise >= 0.0) & (rise <= 1.0)
        if fam == "exp":  # the accuracy at density 0 is not below chance
            h0 = np.array([(1.0 - _basis(fam, r, np.array([cap]), x_hi)[0])
                           / (_basis(fam, r, np.array([x_lo]), x_hi)[0] - math.exp(-r)) for r in rates])
            ok &= p_cap - rise * h0[:, None] >= chance
        accept = ok.mean(axis=1)  # truncated Gaussian mass of each rate
        with np.errstate(divide="ignore"):
            log_rate_w = log_ev + np.log(accept) - math.log(rates.size)  # uniform prior over the rate grid
        for i in np.nonzero(ok.any(axis=1))[0]:
            keep = ok[i]
            k = int(keep.sum())
            fam_s.append(np.full(k, fam))
            rate_s.append(np.full(k, rates[i]))
            pcap_s.append(p_cap[i, keep])
            rise_s.append(rise[i, keep])
            logw_s.append(np.full(k, log_rate_w[i] - math.log(k)))
    if not logw_s:
        return None
    logw = np.concatenate(logw_s)
    fam_arr = np.concatenate(fam_s)
    # Every family has prior mass 1 (uniform over its rate grid), so the weights compare families by evidence.
    weight = np.exp(logw - logw.max())
    weight /= weight.sum()
    return CurvePosterior(x, y, sigma * math.sqrt(scale2), cap, chance, fam_arr, np.concatenate(rate_s),
                          np.concatenate(pcap_s), np.concatenate(rise_s), weight, math.sqrt(scale2))

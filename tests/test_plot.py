"""curve.png says what happened: what is drawn (lines, markers, labels, notes) for each way a run can end."""

from __future__ import annotations

import json

import matplotlib
import pytest

from pwmpr.plot import curve_figure, plot_curve, refit_verdict

matplotlib.use("Agg")


def _row(density, acc, stage="phase", epochs_total=1, **extra):
    return {"stage": stage, "density": density, "val_acc": acc, "val_n": 400, "epochs": 1,
            "epochs_total": epochs_total, **extra}


def _growth(points, **last):
    """Growth rows of the gain rule at (density, acc) points; ``last`` goes into the last row."""
    rows = [_row(d, a, epochs_total=i + 1, stop_rule="gain", decision="grow") for i, (d, a) in enumerate(points)]
    rows[-1].update(last)
    return rows


def _labels(fig) -> list[str]:
    return [" ".join(t.get_text().split()) for t in fig.axes[0].get_legend().get_texts()]


def _notes(fig) -> str:
    return " ".join(" ".join(t.get_text().split()) for t in fig.texts)


def _line(fig, label_start: str):
    """The artist whose legend label starts with ``label_start`` (exactly one)."""
    ax = fig.axes[0]
    found = [ln for ln in ax.get_lines() if " ".join(ln.get_label().split()).startswith(label_start)]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


POINTS = [(0.05, 0.30), (0.0625, 0.50), (0.078, 0.75), (0.098, 0.80), (0.122, 0.85)]


def test_plateau_stop_marks_the_density_the_reason_and_the_test_accuracy(figs):
    history = _growth(POINTS, decision="plateau", stop_tol_used=0.015,
                      plateau_status="gain per doubling 0.004 +/- 0.002 over the last 5 points is below 0.01",
                      posterior={"rho": [0.05, 0.5, 1.0], "q05": [0.2, 0.8, 0.85], "q50": [0.3, 0.86, 0.87],
                                 "q95": [0.4, 0.9, 0.9], "p_gain_below_tol": 0.42, "tol": 0.015, "cap": 1.0})
    history.append(_row(0.122, 0.88, stage="final", epochs_total=6, decision="done"))
    summary = {"stop_reason": "plateau", "discovered_density": 0.122, "test_acc": 0.8731}
    fig = curve_figure(history, summary)
    figs.append(fig)
    found = _line(fig, "discovered density 0.122")
    assert list(found.get_xdata()) == [0.122, 0.122]  # a vertical line at the discovered density
    assert "stop: plateau" in found.get_label()
    notes = _notes(fig)
    # The plateau fallback stopped the run, not the gain rule: the note says which, with its own reason.
    assert notes.startswith("stopped: plateau (the plateau test: gain per doubling 0.004")
    assert "final test accuracy 87.31% at density 0.122" in notes
    test = _line(fig, "final test acc (87.31%)")
    assert list(test.get_xdata()) == [0.122] and list(test.get_ydata()) == [0.8731]
    # The gain rule's view is labelled as the gain rule's (its probability is not the stop reason).
    assert "gain rule at the last phase: Pr(gain up to density 1 < 1.5 pt) = 0.42" in notes


def test_tolerance_used_and_the_cost_guard_are_drawn(figs):
    guard = {"limit": 1.5, "so_far": 0.99, "after_next_phase": 1.29, "projected": 1.59, "over": True}
    history = _growth(POINTS, decision="max-cost", stop_tol_used=0.0136, cost_guard=guard)
    history[2]["cost_guard"] = {**guard, "projected": 0.5, "over": False}  # a phase the guard let through
    fig = curve_figure(history, {"stop_reason": "max-cost", "discovered_density": 0.122, "test_acc": 0.8})
    figs.append(fig)
    tol = _line(fig, "last growth point + gain tolerance used (1.4 pt)")
    assert list(tol.get_ydata()) == pytest.approx([0.85 + 0.0136] * 2)  # last point 0.85 plus tol_used
    mark = _line(fig, "cost guard decided here: 1.59 > 1.5 dense runs")
    assert list(mark.get_xdata()) == [0.122] and list(mark.get_ydata()) == [0.85]  # only where it said "over"
    assert "stopped: max-cost (the cost guard: one more phase and the final training would cost 1.59 dense runs, " \
           "over --max-cost 1.5)" in _notes(fig)


def test_the_cost_guards_reach_is_drawn_until_the_guard_decides(figs):
    guard = {"limit": 1.5, "so_far": 0.1, "after_next_phase": 0.2, "projected": 0.5, "over": False, "reach": 0.56}
    history = _growth(POINTS, decision="plateau", cost_guard=guard)
    fig = curve_figure(history, {"stop_reason": "plateau", "discovered_density": 0.122})
    figs.append(fig)
    assert list(_line(fig, "cost guard's reach: about 0.56").get_xdata()) == [0.56, 0.56]
    # Where the guard decided, its mark says so; the projection is not drawn again.
    stopped = _growth(POINTS, decision="max-cost", cost_guard={**guard, "projected": 1.6, "over": True})
    fig = curve_figure(stopped, {"stop_reason": "max-cost", "discovered_density": 0.122})
    figs.append(fig)
    assert not any("reach" in t for t in _labels(fig))
    # A budget that gets to --max-density records no reach, and nothing is drawn.
    fig = curve_figure(_growth(POINTS, decision="plateau", cost_guard={k: v for k, v in guard.items() if k != "reach"}))
    figs.append(fig)
    assert not any("reach" in t for t in _labels(fig))


def test_no_tolerance_line_without_a_tolerance(figs):
    history = _growth(POINTS, decision="max-phases")
    fig = curve_figure(history)
    figs.append(fig)
    assert not any("tolerance" in t for t in _labels(fig))
    assert not any("cost guard" in t for t in _labels(fig))
    assert "stopped: max-phases (growth reached --max-phases)" in _notes(fig)
    # No summary yet: the run's last decision still gives the density it stops at, but no test accuracy.
    assert list(_line(fig, "discovered density 0.122").get_xdata()) == [0.122, 0.122]
    assert "test acc" not in _notes(fig)


def test_a_running_growth_says_so_and_marks_no_discovered_density(figs):
    fig = curve_figure(_growth(POINTS))
    figs.append(fig)
    assert _notes(fig).startswith("running: no stop decided yet")
    assert not any(t.startswith("discovered density") for t in _labels(fig))


def _paper_rows():
    def fit(rho, ok):
        return {"p0": 0.2, "a": 0.78, "beta": 3.0 / rho, "rho_star": rho, "identifiable": ok}

    rows = [_row(d, a, epochs_total=i + 1, stop_rule="paper", decision="grow")
            for i, (d, a) in enumerate([*POINTS, (0.15, 0.9), (0.19, 0.93), (0.24, 0.95)])]
    rows[2].update(fit=fit(0.3, False), fit_status="need 5 points to stop, have 3")
    for r in rows[3:6]:
        r.update(fit=fit(0.1, False), fit_status="no estimate on 6 points: beta = 12 +/- 33: standard error "
                                                  "above 0.5 x beta")
    rows[6].update(fit=fit(0.1, True), fit_status="density 0.19 >= rho* 0.1 on 7 points")
    rows[7].update(fit=fit(0.1, True), fit_status="density 0.24 >= rho* 0.1 in 2 consecutive refits",
                   decision="saturated")
    return rows


def test_paper_rule_says_what_rho_star_is_and_why_growth_went_past_it(figs):
    rows = _paper_rows()
    fig = curve_figure(rows, {"stop_reason": "saturated", "discovered_density": 0.24, "test_acc": 0.9})
    figs.append(fig)
    rho = _line(fig, "ρ* = 0.1: 95% of the last fit's rise")
    assert list(rho.get_xdata()) == [0.1, 0.1]
    notes = _notes(fig)
    assert "ρ* is the last fit's" in notes and "in consecutive refits" in notes
    # The first phase past rho* (0.122) kept growing because its refit had no estimate: the note quotes the rule.
    assert ('why growth went on past ρ*: at density 0.122 the rule said "no estimate on 6 points: beta = 12 +/- 33'
            in notes)
    assert "stopped: saturated (the paper stop rule: density 0.24 >= rho* 0.1 in 2 consecutive refits)" in notes
    # Every refit's verdict is on the strip along the bottom, at its phase's density.
    none = _line(fig, "paper rule, refit: no estimate")
    met = _line(fig, "paper rule, refit: density ≥ its ρ*")
    assert list(none.get_xdata()) == [0.078, 0.098, 0.122, 0.15]
    assert list(met.get_xdata()) == [0.19, 0.24]
    assert [refit_verdict(r) for r in rows] == [None, None, *["no estimate"] * 4, "met", "met"]


def test_refit_verdict_below_rho_star():
    row = _row(0.05, 0.5, fit={"rho_star": 0.2, "identifiable": True})
    assert refit_verdict(row) == "below"
    assert refit_verdict({**row, "fit": {"rho_star": None, "identifiable": True}}) == "no estimate"


def _shrink_rows():
    rows = _growth(POINTS, decision="shrink", growth_stop="plateau", plateau_status="flat")
    steps = [(0.10, 0.86, True), (0.085, 0.87, True), (0.07, 0.80, False)]
    for i, (d, a, kept) in enumerate(steps):
        rows.append(_row(d, a, epochs_total=6 + i, decision="shrink" if kept else "shrink-revert",
                         shrink={"step": i + 1, "kept": kept, "loss": 0.85 - a, "se": 0.02, "bound": 0.01}))
    rows.append(_row(0.085, 0.88, epochs_total=9, decision="shrink-tol", shrink={"revert": True},
                     knee_density=0.122, smallest_density=0.085))
    rows.append(_row(0.085, 0.89, stage="final", epochs_total=10, decision="done"))
    return rows


def test_shrink_stage_is_a_path_in_step_order_with_the_knee_and_the_kept_density(figs):
    summary = {"stop_reason": "shrink-tol", "discovered_density": 0.085, "test_acc": 0.88, "knee_density": 0.122,
               "smallest_density": 0.085, "growth_stop_reason": "plateau"}
    fig = curve_figure(_shrink_rows(), summary)
    figs.append(fig)
    path = _line(fig, "shrink stage: 3 steps in order from the knee")
    # From the knee, through every candidate in order, to the network gone back to: one connected line.
    assert list(path.get_xdata()) == [0.122, 0.10, 0.085, 0.07, 0.085]
    assert list(path.get_ydata()) == [0.85, 0.86, 0.87, 0.80, 0.88]
    assert path.get_linestyle() == "--"
    arrows = [a for a in fig.axes[0].texts if getattr(a, "arrow_patch", None) is not None]
    assert [(a.xy, a.xyann) for a in arrows][:2] == [((0.10, 0.86), (0.122, 0.85)), ((0.085, 0.87), (0.10, 0.86))]
    assert list(_line(fig, "knee: growth stopped here (plateau) at 0.122").get_xdata()) == [0.122, 0.122]
    assert list(_line(fig, "kept: smallest density 0.085").get_xdata()) == [0.085, 0.085]
    assert list(_line(fig, "shrink candidate that lost the accuracy").get_xdata()) == [0.07]
    notes = _notes(fig)
    assert "stopped: shrink-tol (the shrink candidate of step 3 lost 5.0 pt, over the bound 1.0 pt" in notes
    assert "growth stopped: plateau (the plateau test: flat)" in notes


@pytest.mark.parametrize("reason", ["budget", "done"])
def test_a_run_at_one_density_is_drawn_against_epochs(figs, reason):
    rows = [_row(0.1, a, epochs_total=3 * (i + 1), decision="update") for i, a in enumerate([0.6, 0.8, 0.9])]
    rows[-1]["decision"] = reason
    fig = curve_figure(rows, {"stop_reason": reason, "discovered_density": 0.1, "test_acc": 0.85})
    figs.append(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epochs trained"
    acc = _line(fig, "val acc after each phase (density 0.1 throughout)")
    assert list(acc.get_xdata()) == [3, 6, 9] and list(acc.get_ydata()) == [0.6, 0.8, 0.9]
    assert list(_line(fig, "test acc at the end (85.00%)").get_xdata()) == [9]
    assert not any(list(ln.get_xdata()) == [0.1, 0.1] for ln in ax.get_lines())  # no vertical "curve" at 0.1


def test_the_legend_sits_outside_the_axes(figs):
    fig = curve_figure(_shrink_rows())
    figs.append(fig)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # it covers no point


def test_the_finished_run_draws_its_test_accuracy(tmp_path, monkeypatch):
    """The runner draws curve.png once more after summary.json, with the summary (its test accuracy)."""
    from typer.testing import CliRunner

    import pwmpr.plot
    from pwmpr.cli.app import app

    calls = []
    original = pwmpr.plot.plot_curve

    def spy(history, path, **kw):
        calls.append(kw.get("summary"))
        return original(history, path, **kw)

    monkeypatch.setattr(pwmpr.plot, "plot_curve", spy)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1",
                                      "--final-epochs", "1", "--max-phases", "2", "--batch-size", "64", "-q",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert calls[-1] is not None and calls[-1]["test_acc"] == summary["test_acc"]
    assert all(c is None for c in calls[:-1])


def test_plot_curve_writes_a_png(tmp_path):
    plot_curve(_shrink_rows(), tmp_path / "curve.png", title="t")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_single_phase_at_one_density_says_only_its_end_is_known(figs):
    rows = [_row(1.0, 0.96, epochs_total=3, decision="done")]
    fig = curve_figure(rows, {"stop_reason": "done", "discovered_density": 1.0, "test_acc": 0.94})
    figs.append(fig)
    assert fig.axes[0].get_xlim()[0] == 0  # the axis starts where training did
    assert "one phase of 3 epochs: the history holds its accuracy at the end only" in _notes(fig)
    assert "stopped: done (trained its --epochs)" in _notes(fig)


def test_the_plateau_rule_draws_its_line_over_the_window_it_judged(figs):
    from pwmpr.stop import Observation
    from pwmpr.stop.sequence import plateau_line

    points = [(0.1, 0.90), (0.125, 0.905), (0.156, 0.91), (0.195, 0.912), (0.244, 0.913), (0.305, 0.913)]
    line = plateau_line([Observation(d, a) for d, a in points[1:]], 0.005)
    history = [_row(d, a, epochs_total=i + 1, stop_rule="plateau", decision="grow") for i, (d, a) in enumerate(points)]
    history[-1].update(decision="plateau", plateau_fit=line, plateau_status="plateau: ...")
    fig = curve_figure(history, {"discovered_density": 0.305, "test_acc": 0.91})
    figs.append(fig)
    drawn = _line(fig, "plateau test:")
    label = " ".join(drawn.get_label().split())
    assert f"{100 * line['slope']:.2f} ± {100 * line['se']:.2f} pt per doubling over the last 5 points" in label
    assert "stops below 0.5 pt" in label
    xs, ys = drawn.get_xdata(), drawn.get_ydata()
    assert xs[0] == pytest.approx(0.125) and xs[-1] == pytest.approx(0.305)  # the window, not the first point
    # The line passes through the window's centre (mean log2 density, mean accuracy) with the fitted slope.
    import math

    mid = 2 ** line["x0"]
    k = min(range(len(xs)), key=lambda i: abs(math.log2(xs[i]) - line["x0"]))
    assert ys[k] == pytest.approx(line["y0"] + line["slope"] * (math.log2(xs[k]) - line["x0"]))
    assert ys[-1] - ys[0] == pytest.approx(line["slope"] * math.log2(0.305 / 0.125))
    assert 0.125 < mid < 0.305
    assert "plateau rule at the last phase" in _notes(fig) and "drew no curve" not in _notes(fig)
    assert "doublings" not in label  # no span asked of the window: nothing said about it
    # A window widened to what the validation set resolves says how far it had to reach.
    history[-1]["plateau_fit"] = plateau_line([Observation(d, a) for d, a in points], 0.005, min_span=1.151)
    fig = curve_figure(history, {"discovered_density": 0.305, "test_acc": 0.91})
    figs.append(fig)
    label = " ".join(_line(fig, "plateau test:").get_label().split())
    assert "over the last 6 points" in label
    assert "its window spans ≥ 1.2 doublings, what 400 validation samples resolve)" in label

"""What compare draws and prints: the sweep runs are scored against, legends off the points, readable labels,
IMP's cost written one way on the console and in compare.md."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from pwmpr import discovery
from pwmpr.cli.compare import discovery_line
from pwmpr.compare import compare
from pwmpr.compare.records import distinguishing
from pwmpr.compare.report import comparison_figures
from pwmpr.sweep import sweep_figure

matplotlib.use("Agg")

SWEEP = {"model": "mlp", "data": "mnist5k", "pruner": "phew", "epochs": 3, "tol": 0.01, "seeds": [0],
         "curve": [{"density": d, "test_acc": a, "test_acc_std": None, "n_seeds": 1}
                   for d, a in ((0.05, 0.70), (0.1, 0.84), (0.2, 0.89), (0.4, 0.915), (0.8, 0.936), (1.0, 0.94))],
         "best": {"density": 1.0, "test_acc": 0.94}, "knee": {"density": 0.8, "test_acc": 0.936}}


def _run(root: Path, name: str, *, stop: str, max_cost: float, density: float, acc: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {"version": 1, "method": "pwmpr", "model": "mlp", "data": "mnist5k", "seed": 0, "device": "cpu",
              "growth": {"rule": "pwmp", "seed_density": 0.05}, "stop": {"rule": stop, "max_cost": max_cost}}
    summary = {"method": "pwmpr", "seed": 0, "stop_reason": "saturated", "wall_time": 1.0,
               "discovered_density": density, "test_acc": acc, "cost_flops": 1.2, "cost_epochs": 4.0,
               "dense_reference_epochs": 3, "tau_core": {"ratio": 0.3}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "history.jsonl").write_text(json.dumps({"stage": "phase", "density": density, "val_acc": acc,
                                                   "tau_core": {"ratio": 0.3}}) + "\n")
    return run


@pytest.fixture
def groups(tmp_path):
    runs = [_run(tmp_path, "paper-run", stop="paper", max_cost=0.0, density=0.5, acc=0.95),
            _run(tmp_path, "gain-run", stop="gain", max_cost=0.0, density=0.9, acc=0.96)]
    return compare(runs, None).groups


def test_labels_name_the_options_that_differ_not_a_hash(groups):
    assert sorted(g.label for g in groups) == ["pwmpr/pwmp (stop.rule=gain)", "pwmpr/pwmp (stop.rule=paper)"]
    assert not any("#" in g.label for g in groups)


def test_labels_name_the_run_folder_when_many_options_differ(tmp_path):
    runs = [_run(tmp_path, "a", stop="paper", max_cost=0.0, density=0.5, acc=0.95),
            _run(tmp_path, "b", stop="gain", max_cost=1.5, density=0.9, acc=0.96)]
    for run, extra in zip(runs, ({"final_epochs": 3, "phase_epochs": 1}, {"final_epochs": 5, "phase_epochs": 2}),
                          strict=True):
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, **extra}))
    labels = sorted(g.label for g in compare(runs, None).groups)
    assert labels == ["pwmpr/pwmp (run a)", "pwmpr/pwmp (run b)"]


def test_distinguishing_lists_only_what_differs():
    a = {"stop": {"rule": "paper", "tol": 0.005}, "final_epochs": 3}
    b = {"stop": {"rule": "gain", "tol": 0.005}, "final_epochs": 3}
    assert distinguishing([a, b]) == ["stop.rule=paper", "stop.rule=gain"]
    many = [{"a": i, "b": i, "c": i, "d": i} for i in range(2)]
    assert distinguishing(many) is None


def test_acc_vs_density_draws_the_sweep_and_its_knee(groups, figs):
    fig1, fig2 = comparison_figures(groups, [SWEEP])
    figs += [fig1, fig2]
    ax = fig1.axes[0]
    curve = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata()) == 6]
    assert len(curve) == 1
    assert list(curve[0].get_xdata()) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert list(curve[0].get_ydata()) == pytest.approx([70.0, 84.0, 89.0, 91.5, 93.6, 94.0])  # in percent
    knee = [ln for ln in ax.get_lines() if ln.get_label().startswith("sweep knee 0.8")]
    assert len(knee) == 1 and list(knee[0].get_xdata()) == [0.8, 0.8]
    labels = [" ".join(t.get_text().split()) for t in ax.get_legend().get_texts()]
    assert "sweep (the reference): phew masks trained 3 epochs at fixed densities" in labels
    assert "sweep knee 0.8: smallest density within 1 pt of its best" in labels


def test_legends_sit_outside_the_axes(groups, figs):
    fig1, fig2 = comparison_figures(groups, [SWEEP])
    figs += [fig1, fig2]
    for fig in (fig1, fig2):
        fig.canvas.draw()
        ax = next(a for a in fig.axes if a.get_legend() is not None)
        assert ax.get_legend().get_window_extent().x0 >= max(a.get_window_extent().x1 for a in fig.axes)


def test_no_sweep_no_sweep_curve(groups, figs):
    fig1, fig2 = comparison_figures(groups)
    figs += [fig1, fig2]
    assert not any("sweep" in t.get_text() for t in fig1.axes[0].get_legend().get_texts())


def test_the_sweep_folder_figure_marks_its_knee(figs):
    fig = sweep_figure(SWEEP)
    figs.append(fig)
    knee = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("sweep knee 0.8")]
    assert len(knee) == 1 and list(knee[0].get_xdata()) == [0.8, 0.8]


@pytest.mark.parametrize(("exact", "shown"), [(True, "2.95"), (False, "2.95+")])
def test_console_and_markdown_write_imp_cost_alike(exact, shown):
    row = {"run": "r", "hit": None, "discovered_density": 0.09, "density_over_knee": 0.11, "test_acc": 0.95,
           "gap_to_best": 0.01, "cost_flops": 3.1, "imp_cost_flops": 2.951, "imp_cost_exact": exact,
           "knee_density": 0.8, "gap_to_dense": 0.0, "stop_reason": "shrink-tol"}
    assert discovery.imp_cost_text(row) == shown
    line = discovery_line(row)
    assert f"IMP to that density {shown} (x dense FLOPs)" in line
    assert f"| {shown} |" in discovery.markdown([row])
    assert discovery.imp_cost_text({**row, "imp_cost_flops": None}) == "-"

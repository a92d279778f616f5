"""--force replaces only what pwmpr wrote: a run folder (grow) or a sweep folder (sweep), never any other folder."""

from __future__ import annotations

from typer.testing import CliRunner

from pwmpr.cli.app import app

runner = CliRunner()
GROW = ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases",
        "1", "--no-tau-core", "-q"]
SWEEP = ["sweep", "--data", "digits", "--model", "mlp", "--epochs", "1", "--densities", "1", "-q"]


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_grow_force_refuses_a_folder_that_is_not_a_run(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    line = _one_error_line(runner.invoke(app, [*GROW, "--out", str(project), "--force"]))
    assert "not one" in line and "pick another --out" in line
    assert [p.name for p in project.iterdir()] == ["notes.txt"] and (project / "notes.txt").read_text() == "mine"


def test_sweep_force_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    line = _one_error_line(runner.invoke(app, [*SWEEP, "--out", str(project), "--force"]))
    assert "not one" in line
    assert (project / "notes.txt").read_text() == "mine"


def test_sweep_force_checks_the_new_sweep_before_deleting_the_old(tmp_path):
    out = tmp_path / "sweep"
    assert runner.invoke(app, [*SWEEP, "--out", str(out)]).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    line = _one_error_line(runner.invoke(app, [*SWEEP, "--model", "resnet21", "--out", str(out), "--force"]))
    assert "unknown model" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old sweep is intact


def test_sweep_refuses_a_seed_the_generators_cannot_take(tmp_path):
    line = _one_error_line(runner.invoke(app, [*SWEEP, "--seeds", str(10**23), "--out", str(tmp_path / "s")]))
    assert "2**63" in line and not (tmp_path / "s").exists()


def test_a_non_empty_folder_needs_force_for_grow_and_sweep_alike(tmp_path):
    for command, hint in ((GROW, "--resume {}"), (SWEEP, "--resume {} to continue its sweep")):
        project = tmp_path / command[0]
        project.mkdir()
        hint = hint.format(project)
        (project / "notes.txt").write_text("mine")
        line = _one_error_line(runner.invoke(app, [*command, "--out", str(project)]))
        assert "is not empty" in line and hint in line and "--force" in line, line
        assert [p.name for p in project.iterdir()] == ["notes.txt"]

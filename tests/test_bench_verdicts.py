"""The computed verdicts that bench scripts write into bench/RESULTS.md, on hand-picked numbers."""

from __future__ import annotations

from benchfiles import load_bench


def _bench(name):
    """The bench script ``bench/<name>.py`` as a module."""
    return load_bench(name)


def _attention():
    return _bench("attention")


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


def _discovery():
    return _bench("discovery")


def test_discovery_hit_share_interval_is_wilsons():
    # 13 of 18: p = 0.7222; centre (p + z^2/2n) / (1 + z^2/n) = 0.6831, half-width 0.1919 at z = 1.96.
    lo, hi = _discovery().wilson(13, 18)
    assert abs(lo - 0.4912) < 5e-4 and abs(hi - 0.8750) < 5e-4
    assert _discovery().wilson(18, 18)[1] == 1.0


def test_discovery_splits_the_default_hits_by_seed_density_and_names_the_default_one():
    def run(sd, seed, hit):
        return {"pair": "a-mlp", "rule": "explore", "seed_density": sd, "seed": seed, "hit": hit}

    rows = [run(0.01, s, h) for s, h in enumerate((False, True, False))]
    rows += [run(0.05, s, h) for s, h in enumerate((True, True, True, False))]
    text = _discovery().by_seed_density(rows)
    assert text == (" By seed density it hits 1 of 3 (33%) from 0.01, 3 of 4 (75%) from 0.05 (pwmpr grow's "
                    "default seed density).")
    assert _discovery().by_seed_density(rows[3:]) == ""  # one seed density: nothing to split


def test_discovery_scores_the_sweeps_own_runs_in_the_window(tmp_path):
    import json

    # knee 0.16, best 94%: the runs at 0.16 and 0.32 are in the window [knee, 2 x knee]; a run passes at >= 93%.
    for name, acc in (("d0.08-s0", 0.99), ("d0.16-s0", 0.935), ("d0.16-s1", 0.925), ("d0.32-s0", 0.931),
                      ("d0.64-s0", 0.99)):
        run = tmp_path / "mnist5k-mlp" / "sweep" / "runs" / name
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"test_acc": acc}))
    sweeps = {"mnist5k-mlp": {"knee": {"density": 0.16}, "best": {"test_acc": 0.94}}}
    text = "\n".join(_discovery().sweep_runs_in_window(tmp_path, sweeps))
    assert "| mnist5k-mlp | 0.16, 0.32 | 2/3 | 67% |" in text and "| all | | 2/3 | **67%** |" in text


def test_discovery_pairs_every_variant_with_the_default_run_by_run():
    discovery = _discovery()
    default = discovery.default_rule()
    other = "gain-guarded"
    setting = {"final_init": "shrink-perturb", "growth": "pwmp-explore", "stop": "plateau", "plateau_tol": 0.005,
               "plateau_resolve": False}

    def row(rule, seed, acc, cost, hit, **changed):
        return {"pair": "digits-mlp", "rule": rule, "seed_density": 0.01, "seed": seed, "test_acc": acc,
                "cost_flops": cost, "hit": hit, "settings": {**setting, **changed}}

    rows = [row(default, s, a, 1.0, h) for s, a, h in ((0, 0.95, True), (1, 0.96, True), (2, 0.97, True))]
    rows += [row(other, s, a, 1.2, h, stop="gain") for s, a, h in ((0, 0.94, False), (1, 0.96, True))]  # no seed 2
    # default minus the other on seeds 0 and 1: +1 and 0 points: mean +0.50, s.e. 0.50; cost 1.0 - 1.2.
    text = "\n".join(discovery.paired(rows))
    assert f"| `{other}` | `{default}` (default) | 2 | +0.50 ± 0.50 | 1 / 1 / 0 | -0.20 | 2, 1 |" in text
    assert "| `continue`" not in text  # a variant with no run is not listed


def test_a_start_of_final_training_is_paired_with_the_same_growth_and_the_default_start():
    discovery = _discovery()
    default = discovery.default_rule()
    plain = {"final_init": "shrink-perturb", "growth": "pwmp", "stop": "plateau", "plateau_tol": 0.005,
             "plateau_resolve": False}

    def rows(rule, accs, **changed):
        return [{"pair": "a-mlp", "rule": rule, "seed_density": 0.05, "seed": s, "test_acc": a, "cost_flops": 1.0,
                 "hit": True, "settings": {**plain, **changed}} for s, a in enumerate(accs)]

    table = (rows(default, (0.99, 0.99), growth="pwmp-explore") + rows("pwmp", (0.90, 0.92))
             + rows("continue", (0.89, 0.90), final_init="continue"))
    assert discovery.reference(table, "continue") == "pwmp"  # the same growth, the default's start
    assert discovery.reference(table, "pwmp") == default
    text = "\n".join(discovery.paired(table))
    assert "| `continue` | `pwmp` | 2 | +1.50 ± 0.50 | 2 / 0 / 0 | +0.00 | 2, 2 |" in text
    no_twin = [x for x in table if x["rule"] != "pwmp"]  # nothing with continue's growth: the default
    assert discovery.reference(no_twin, "continue") == default


def test_choosing_the_start_by_validation_keeps_the_higher_validation_run_and_counts_both_trainings():
    discovery = _discovery()
    default = discovery.default_rule()
    grown = {"final_init": "shrink-perturb", "growth": "pwmp-explore", "stop": "plateau", "plateau_tol": 0.005,
             "plateau_resolve": False}
    start = "explore-reinit"

    def run(rule, seed, val, test, cost, final, hit, density=0.2, imp=5.0):
        return {"pair": "a-mlp", "rule": rule, "seed_density": 0.01, "seed": seed, "val_acc": val, "test_acc": test,
                "cost_flops": cost, "final_cost": final, "discovered_density": density, "hit": hit,
                "within_acc": hit, "within_density": True, "imp_cost_flops": imp, "imp_cost_exact": True,
                "settings": {**grown, "final_init": "reinit" if rule == start else "shrink-perturb"}}

    table = []
    for seed, ref, other in (
        # validation prefers the start, which tests 2 points higher: right (2 apart); choice cost 0.6 + 0.3.
        (0, (0.95, 0.94, 0.6, 0.2, False), (0.97, 0.96, 0.7, 0.3, True)),
        # a tie on validation keeps the reference (a tie, neither right nor wrong); cost 1.0 + 0.4.
        (1, (0.96, 0.95, 1.0, 0.4, False), (0.96, 0.97, 1.0, 0.4, True)),
        # right (9 apart), but both trainings cost 1.2 + 0.5 = 1.7 > 1.5: not scored.
        (2, (0.90, 0.90, 1.2, 0.5, True), (0.99, 0.99, 1.2, 0.5, True)),
        # the two test the same: a tie; the start is kept (higher on validation) and hits; cost 0.5 + 0.1.
        (4, (0.95, 0.95, 0.5, 0.1, True), (0.97, 0.95, 0.5, 0.1, True)),
        # right (1 apart), and the start hits on its own cost, but 0.6 + 0.5 = 1.1 is not below IMP's 1.0.
        (5, (0.94, 0.94, 0.6, 0.2, True), (0.96, 0.95, 0.6, 0.5, True)),
        # validation prefers the start, which tests 3 points lower: wrong (3 apart); cost 0.4 + 0.2.
        (7, (0.96, 0.96, 0.4, 0.2, True), (0.97, 0.93, 0.4, 0.2, False)),
    ):
        imp = 1.0 if seed == 5 else 5.0
        table += [run(default, seed, *ref, imp=imp), run(start, seed, *other, imp=imp)]
    # growth that ended elsewhere, and a start without a final training: no pair of starts from one grown mask.
    table += [run(default, 3, 0.90, 0.90, 0.5, 0.1, True), run(start, 3, 0.99, 0.99, 0.5, 0.1, True, density=0.3),
              run(default, 6, 0.90, 0.90, 0.5, None, True), run(start, 6, 0.99, 0.99, 0.5, 0.1, True)]
    # A second start, with the same growth: validation keeps the reference, which tests higher and hits, as before.
    table.append({**run(start, 4, 0.90, 0.94, 0.5, 0.1, False), "rule": "rewind",
                  "settings": {**grown, "final_init": "rewind"}})
    text = "\n".join(discovery.chosen_start(table))
    assert (f"| `rewind` | `{default}` | 1 | 1 / 0 / 0 | 0 / 0 | 95.00%, 94.00%, 95.00% | 0.60 | 1 of 1 | 1, 0, 1 |"
            in text)
    # Test means over seeds 0, 1, 2, 4, 5, 7: reference 5.64 / 6, start 5.75 / 6, chosen (0.96 + 0.95 + 0.99 + 0.95
    # + 0.95 + 0.93) / 6; choice cost (0.9 + 1.4 + 1.7 + 0.6 + 1.1 + 0.6) / 6 = 1.05. Within the guard (all but
    # seed 2) the reference hits in seeds 4, 5, 7, the start in 0, 1, 4, 5, the choice in 0 and 4 only.
    assert (f"| `{start}` | `{default}` | 6 | 3 / 1 / 2 | 2 / 1 | 94.00%, 95.83%, 95.50% | 1.05 | 5 of 6 | 3, 4, 2 |"
            in text), text
    assert ("both final trainings fit within the guard in 6 of 7 paired runs; there the choice hits more often than "
            "the reference start in 0, less often in 1 and as often in 1 of 2 comparisons." in text)
    other_growth = [dict(x, settings={**x["settings"], "growth": "pwmp"}) if x["rule"] == start else x
                    for x in table]
    other_growth = [x for x in other_growth if x["rule"] != "rewind"]
    assert discovery.chosen_start(other_growth) == []  # a start paired with another growth is no choice of start


def test_the_fan_in_sweeps_are_set_against_the_ground_truth_point_by_point(tmp_path):
    import json

    fan_in_sweeps = _bench("discovery").fan_in_sweeps
    truth = {"a-mlp": {"curve": [{"density": 0.01, "test_acc": 0.50}, {"density": 0.1, "test_acc": 0.90},
                                 {"density": 1.0, "test_acc": 0.95}]},
             "b-mlp": {"curve": [{"density": 0.01, "test_acc": 0.5}]}}
    # a-mlp with fan-in: +10 points at 0.01 (higher), -0.5 at 0.1 (within), exactly -1 at 1 (lower); 0.5 is not in
    # the ground truth's grid and is left out. b-mlp's fan-in sweep has not finished: no row.
    scaled = {"complete": True, "curve": [{"density": 0.01, "test_acc": 0.60}, {"density": 0.1, "test_acc": 0.895},
                                          {"density": 0.5, "test_acc": 0.9}, {"density": 1.0, "test_acc": 0.94}]}
    for pair, summary in (("a-mlp", scaled), ("b-mlp", {"complete": False, "curve": []})):
        (tmp_path / pair / "sweep-fanin").mkdir(parents=True)
        (tmp_path / pair / "sweep-fanin" / "summary.json").write_text(json.dumps(summary))
    lines = fan_in_sweeps(tmp_path, truth)
    assert lines[-1] == "| a-mlp | 0.01 | 0.1 | 1 | 0.01: 60.00%, 0.1: 89.50%, 1: 94.00% |"
    assert not any(line.startswith("| b-mlp") for line in lines)
    assert fan_in_sweeps(tmp_path / "none", truth) == []  # no fan-in sweep anywhere: no section


def test_reach_tells_a_one_line_refusal_from_a_bug_and_counts_them(monkeypatch):
    import argparse

    reach = _bench("reach")
    monkeypatch.setattr(reach, "_version", lambda library: "0.0")
    rows = [
        {"model": "a", "timm": "a_t", "side": 32, "grow_exit": 0, "grow_message": "", "grow_traceback": False,
         "stop": "max-phases", "density": 0.0625, "export_exit": 0, "export_message": "", "export_traceback": False,
         "ort_ok": True, "ort_ratio": 0.5},
        {"model": "b", "timm": "b_t", "side": 64, "grow_exit": 2, "grow_traceback": False,
         "grow_message": "error: module m (X) calls lstm() in its forward: pwmpr has no rule for this op"},
        {"model": "c", "timm": "c_t", "side": 32, "grow_exit": 1, "grow_traceback": True,
         "grow_message": "RuntimeError: size mismatch"},
        # exit 2 but with a traceback printed: not a clean refusal
        {"model": "d", "timm": "d_t", "side": 32, "grow_exit": 0, "grow_message": "", "grow_traceback": False,
         "stop": "max-phases", "density": 0.0625, "export_exit": 2, "export_traceback": True,
         "export_message": "error: x"},
    ]
    text = reach.render("timm", rows, argparse.Namespace(samples=600))
    assert "| a (a_t) | 32 px | ok | max-phases, 0.0625 | ok, onnxruntime matches (max diff / tolerance 0.5) |" in text
    assert ("| b (b_t) | 64 px | refused: `module m (X) calls lstm() in its forward: pwmpr has no rule for this op` "
            "|") in text
    assert "| c (c_t) | 32 px | **bug** (exit 1, traceback): `RuntimeError: size mismatch` | - | - |" in text
    assert "| d (d_t) | 32 px | ok | max-phases, 0.0625 | **bug** (exit 2, traceback): `error: x` |" in text
    assert ("Computed: of 4 models, 2 grow and 1 of those export with every encoding checked; 1 refused at the "
            "start and 0 at the export, in one line; 2 step(s) failed otherwise (a bug).") in text
    assert "Measured last" not in text
    subset = reach.render("timm", rows, argparse.Namespace(samples=600, measured=["b", "c"]))
    assert "Measured last, at later code: b, c; the other rows are from the run before" in subset
    assert "Measured last" not in reach.render("timm", rows, argparse.Namespace(samples=600,
                                                                                 measured=["a", "b", "c", "d"]))
    text = reach.render("transformers", [{"model": "bert", "source": "bert", "task": "text", "side": 16,
                                          "grow_exit": 0, "stop": "max-phases", "density": 0.0626, "export_exit": 0,
                                          "ort_ok": True, "ort_ratio": 0.1}], argparse.Namespace(samples=600))
    assert "| model (model type) | input |" in text
    assert "| bert (bert) | 16 tokens | ok | max-phases, 0.0626 | ok, onnxruntime matches" in text


def test_reach_sees_a_traceback_but_not_a_table_drawn_with_box_characters():
    import os
    import sys

    run = _bench("reach")._run
    code, last, traceback = run([sys.executable, "-c", "print('│ dense │ 1.000 │')"], dict(os.environ))
    assert (code, last, traceback) == (0, "│ dense │ 1.000 │", False)
    code, last, traceback = run([sys.executable, "-c", "raise ValueError('boom')"], dict(os.environ))
    assert code == 1 and traceback and last == "ValueError: boom"
    code, last, traceback = run([sys.executable, "-c", "import sys; print('error: no such model'); sys.exit(2)"],
                                dict(os.environ))
    assert (code, last, traceback) == (2, "error: no such model", False)


def test_discovery_counts_the_rough_phases_that_lost_what_the_one_before_had_learned():
    discovery = _discovery()

    def phases(*losses):
        return [{"stage": "phase", "train_loss": x} for x in losses] + [{"stage": "final", "train_loss": 50.0}]

    # 0.42 -> 6.6 and 2.0 -> 4.6 lost it; 2.30 -> 2.34 is noise at chance (under 1.5x), 0.02 -> 0.04 under the
    # margin; the final training (a fresh start under reinit) is no rough phase.
    assert discovery.loss_jumps(phases(2.30, 2.34, 0.9, 0.42, 6.6, 2.0, 4.6)) == 2
    assert discovery.loss_jumps(phases(0.02, 0.04, 0.03)) == 0
    assert discovery.loss_jumps(phases(1.0)) == 0
    rows = [{"pair": "digits-relu_mlp", "rule": "explore", "loss_jumps": 0, "test_acc": 0.95},
            {"pair": "digits-relu_mlp", "rule": "warmup", "loss_jumps": 2, "test_acc": 0.90},
            {"pair": "digits-relu_mlp", "rule": "warmup", "loss_jumps": 0, "test_acc": 0.96},
            {"pair": "digits-relu_mlp", "rule": "warmup", "loss_jumps": 0, "test_acc": 0.94},
            {"pair": "teacher-mlp", "rule": "warmup", "loss_jumps": 0, "test_acc": 0.60}]
    text = "\n".join(discovery.jumps(rows))
    assert "| explore | 0 of 1 | - |" in text
    # Within its pair the run with a jump is compared with that pair's others only (95%), not with teacher's 60%.
    assert "| warmup | 1 of 4 | digits-relu_mlp 1/3 (90.00%, 95.00%) |" in text
    assert discovery.jumps([{k: v for k, v in r.items() if k != "loss_jumps"} for r in rows]) == []  # older rows

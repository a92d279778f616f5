"""Growth rules: exact budgets, kept edges, eligibility, determinism, >2^24 candidates, sampling ∝ score."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pwmpr.errors import PwmprError
from pwmpr.growth import GROWTH_RULES, grow, growth_count
from pwmpr.masks import MaskSet

ALL_RULES = GROWTH_RULES.names()
SCORED_RULES = [r for r in ALL_RULES if GROWTH_RULES.get(r).uses_scores]
# Rules that draw only among positive scores (pwmp-explore also draws among zero-score edges).
POSITIVE_RULES = [r for r in SCORED_RULES if r != "pwmp-explore"]


def two_layers(device: str = "cpu", kept_b: int = 4) -> tuple[MaskSet, dict[str, torch.Tensor]]:
    """Layer "a" (4x5) keeps its first 6 entries, layer "b" (3x4) its first ``kept_b``; scores 1..n, all > 0."""
    a = torch.zeros(20, dtype=torch.bool)
    a[:6] = True
    b = torch.zeros(12, dtype=torch.bool)
    b[:kept_b] = True
    masks = MaskSet({"a": a.view(4, 5), "b": b.view(3, 4)}).to(device)
    scores = {
        "a": torch.arange(1, 21, dtype=torch.float64).view(4, 5).to(device),
        "b": torch.arange(1, 13, dtype=torch.float64).view(3, 4).to(device),
    }
    return masks, scores


def n_added(added: dict[str, torch.Tensor]) -> int:
    return sum(int(v.numel()) for v in added.values())


def assert_consistent(old: MaskSet, new: MaskSet, added: dict[str, torch.Tensor]) -> None:
    """Old edges kept, ``added`` is exactly the sorted set of flat positions that turned True."""
    assert set(new) == set(old) == set(added)
    for name in old:
        o, n = old[name].reshape(-1).cpu(), new[name].reshape(-1).cpu()
        assert new[name].shape == old[name].shape and new[name].dtype == torch.bool
        assert torch.all(n[o]), f"layer {name} lost an edge"
        diff = torch.nonzero(n & ~o).squeeze(1)
        idx = added[name].cpu()
        assert idx.dtype == torch.long
        assert torch.equal(idx, diff), f"layer {name}: added {idx.tolist()} but the mask gained {diff.tolist()}"


# -- budgets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nnz", "gamma", "expected"),
    # Worked by hand: gamma * nnz, halves rounded up.
    [(10, 0.25, 3), (10, 0.1, 1), (10, 0.5, 5), (8, 0.25, 2), (100, 0.25, 25), (7, 0.5, 4), (10, 0.04, 0), (0, 1, 0)],
)
def test_growth_count_rounds_half_up(nnz, gamma, expected):
    assert growth_count(nnz, gamma) == expected


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize(
    ("gamma", "expected"),
    # nnz = 6 + 4 = 10 kept of 32, so 22 absent: 2.5 -> 3, 1.0 -> 1, 5, 10, 20, 30 capped at 22, 0.4 -> 0.
    [(0.25, 3), (0.1, 1), (0.5, 5), (1.0, 10), (2.0, 20), (3.0, 22), (0.04, 0)],
)
def test_grow_adds_exactly_round_gamma_nnz(rule, gamma, expected, generator, device):
    masks, scores = two_layers(device)
    new, added = grow(masks, scores, gamma, rule=rule, generator=generator)
    assert n_added(added) == expected
    assert new.n_nonzero() == 10 + expected
    assert_consistent(masks, new, added)


@pytest.mark.parametrize("rule", ALL_RULES)
def test_grow_layer_scope_budgets_are_per_layer(rule, generator):
    # a keeps 6, b keeps 2. Per layer at gamma 0.25: round(1.5) = 2 and round(0.5) = 1; global would be round(2) = 2.
    masks, scores = two_layers(kept_b=2)
    new, added = grow(masks, scores, 0.25, rule=rule, generator=generator, scope="layer")
    assert added["a"].numel() == 2 and added["b"].numel() == 1
    assert_consistent(masks, new, added)
    _, added_global = grow(masks, scores, 0.25, rule=rule, generator=generator)
    assert n_added(added_global) == 2


def test_grow_layer_scope_caps_each_layer_and_skips_empty_layers(generator):
    # b keeps 10 of 12 (2 absent), gamma 1 asks for 10: capped at 2. c keeps nothing: it gains nothing.
    masks, scores = two_layers(kept_b=10)
    masks = MaskSet({**masks, "c": torch.zeros(2, 3, dtype=torch.bool)})
    scores["c"] = torch.ones(2, 3, dtype=torch.float64)
    new, added = grow(masks, scores, 1.0, generator=generator, scope="layer")
    assert [added[n].numel() for n in ("a", "b", "c")] == [6, 2, 0]
    assert new["b"].all()
    assert_consistent(masks, new, added)


def test_grow_does_not_modify_its_input(generator):
    masks, scores = two_layers()
    before = masks.clone()
    grow(masks, scores, 0.5, generator=generator)
    assert masks.equal(before)


def test_grow_accepts_a_plain_dict_and_empty_masks(generator):
    masks, scores = two_layers()
    new, added = grow(dict(masks), scores, 0.25, generator=generator)
    assert isinstance(new, MaskSet) and n_added(added) == 3
    new, added = grow(MaskSet({}), {}, 0.25, generator=generator)
    assert len(new) == 0 and added == {}


# -- eligibility ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", POSITIVE_RULES)
def test_grow_never_picks_zero_score_edge(rule, device):
    # Every 5th edge kept: 40 kept of 200, 160 absent of which exactly 10 have a score > 0.
    mask = torch.zeros(200, dtype=torch.bool)
    mask[::5] = True
    scores = torch.zeros(200, dtype=torch.float64)
    positive = torch.tensor([1, 2, 13, 27, 58, 99, 101, 151, 177, 199])
    scores[positive] = torch.linspace(1e-6, 1.0, 10, dtype=torch.float64)
    masks = MaskSet({"w": mask.view(10, 20)}).to(device)
    score_map = {"w": scores.view(10, 20).to(device)}
    for seed in range(20):
        # gamma 0.25 -> 10 = every positive edge; gamma 0.2 -> 8; gamma 1 -> 40, capped at the 10 eligible.
        for gamma, expected in [(0.25, 10), (0.2, 8), (1.0, 10)]:
            gen = torch.Generator().manual_seed(seed)
            new, added = grow(masks, score_map, gamma, rule=rule, generator=gen)
            idx = added["w"].cpu()
            assert idx.numel() == expected
            assert torch.all(scores[idx] > 0), f"{rule} picked a zero-score edge"
            assert_consistent(masks, new, added)


@pytest.mark.parametrize("rule", SCORED_RULES)
def test_grow_treats_negative_and_non_finite_scores_as_ineligible(rule, generator):
    mask = torch.tensor([True, True, False, False, False, False, False, False])
    scores = torch.tensor([1.0, 1.0, float("nan"), float("inf"), -3.0, 0.5, -0.0, 2.0], dtype=torch.float64)
    _, added = grow({"w": mask}, {"w": scores}, 2.0, rule=rule, generator=generator)  # asks for 4, 2 are eligible
    # pwmp-explore's exploration pool is the zero-score edges (-0.0 among them), never NaN, inf or negative ones.
    assert added["w"].tolist() == ([5, 6, 7] if rule == "pwmp-explore" else [5, 7])


def test_random_ignores_scores_and_may_take_zero_score_edges(generator):
    masks, _ = two_layers()
    new, added = grow(masks, None, 2.2, rule="random", generator=generator)  # round(22) = 22 = every absent edge
    assert n_added(added) == 22 and all(m.all() for m in new.values())


def test_topk_picks_largest_scores_ties_to_lower_index():
    mask = torch.tensor([True, True, True, True, False, False, False, False, False, False])
    scores = torch.tensor([9.0, 9.0, 9.0, 9.0, 1.0, 5.0, 3.0, 5.0, 5.0, 4.0], dtype=torch.float64)
    for rule in ("pwmp-topk", "gradient"):
        # gamma 0.5 -> 2 edges: the three 5.0 tie, the lowest two positions (5, 7) win.
        _, added = grow({"w": mask}, {"w": scores}, 0.5, rule=rule)
        assert added["w"].tolist() == [5, 7]
        # gamma 1 -> 4 edges: all three 5.0 and the 4.0.
        _, added = grow({"w": mask}, {"w": scores}, 1.0, rule=rule)
        assert added["w"].tolist() == [5, 7, 8, 9]


def test_global_scope_spends_the_budget_where_the_scores_are():
    # Layer b's absent edges score 1e6, layer a's 1: pwmp-topk puts the whole budget (3) in b.
    masks, scores = two_layers()
    scores["b"] = torch.full((3, 4), 1e6, dtype=torch.float64)
    _, added = grow(masks, scores, 0.25, rule="pwmp-topk")
    assert added["a"].numel() == 0 and added["b"].tolist() == [4, 5, 6]


# -- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_grow_is_reproducible_with_a_seeded_generator(rule, scope):
    masks = MaskSet({"a": torch.rand(30, 40, generator=torch.Generator().manual_seed(0)) < 0.1})
    masks = MaskSet({**masks, "b": torch.rand(50, generator=torch.Generator().manual_seed(1)) < 0.2})
    gen = torch.Generator().manual_seed(2)
    scores = {n: torch.rand(m.shape, dtype=torch.float64, generator=gen) for n, m in masks.items()}
    runs = [grow(masks, scores, 0.5, rule=rule, scope=scope, generator=torch.Generator().manual_seed(7)) for _ in "ab"]
    assert runs[0][0].equal(runs[1][0])
    assert all(torch.equal(runs[0][1][n], runs[1][1][n]) for n in masks)
    if rule in ("pwmp", "random"):
        other = grow(masks, scores, 0.5, rule=rule, scope=scope, generator=torch.Generator().manual_seed(8))
        assert not other[0].equal(runs[0][0])


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0, 0.0, -0.25, float("nan"), float("inf"), "abc", None])
def test_grow_rejects_bad_gamma(gamma):
    masks, scores = two_layers()
    with pytest.raises(PwmprError, match="gamma"):
        grow(masks, scores, gamma)


def test_grow_rejects_scores_missing_a_layer_or_of_the_wrong_shape():
    masks, scores = two_layers()
    with pytest.raises(PwmprError, match="'b'"):
        grow(masks, {"a": scores["a"]}, 0.25)
    with pytest.raises(PwmprError, match="'a'.*shape"):
        grow(masks, {"a": scores["a"].reshape(-1), "b": scores["b"]}, 0.25)
    with pytest.raises(PwmprError, match="scores"):
        grow(masks, None, 0.25, rule="pwmp")


def test_grow_rejects_unknown_rule_and_scope():
    masks, scores = two_layers()
    with pytest.raises(PwmprError, match="unknown growth rule 'nope'.*pwmp"):
        grow(masks, scores, 0.25, rule="nope")
    with pytest.raises(PwmprError, match="scope"):
        grow(masks, scores, 0.25, scope="layers")


def test_registry_holds_the_rules():
    attention = {"pwmp-attn", "pwmp-qk-gradient", "pwmp-qk-head", "pwmp-qk-random"}  # tests/test_attention.py
    assert set(ALL_RULES) == {"pwmp", "pwmp-explore", "pwmp-topk", "random", "gradient"} | attention
    assert not GROWTH_RULES.get("random").uses_scores
    assert GROWTH_RULES.get("random").scores(None, {}, (1,)) is None
    # The attention-aware rules draw like pwmp: the same edges from the same scores and generator.
    masks, scores = two_layers()
    ref = grow(masks, scores, 0.5, rule="pwmp", generator=torch.Generator().manual_seed(3))[0]
    for rule in attention:
        got = grow(masks, scores, 0.5, rule=rule, generator=torch.Generator().manual_seed(3))[0]
        assert all(torch.equal(got[n], ref[n]) for n in ref), rule


# -- more than 2^24 candidates ------------------------------------------------------------------


def test_pwmp_handles_more_than_2_pow_24_candidates():
    n = 2**24 + 10
    with pytest.raises(RuntimeError):  # the limit this test is about
        torch.multinomial(torch.ones(n), 1)
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, :1000] = True
    scores = torch.zeros(1, n, dtype=torch.float32)
    scores[0, 1001::2] = 1.0  # odd positions eligible, even ones score 0
    huge = torch.tensor([2**24 + 1, 2**24 + 3, 2**24 + 9])  # past 2^24: float32 cannot even hold these indices
    scores[0, huge] = 1e30  # key log(1e30) = 69 vs about log(8e6) + a few for the best of the rest: always taken
    new, added = grow({"w": mask}, {"w": scores}, 1.0, generator=torch.Generator().manual_seed(0))
    idx = added["w"]
    assert idx.numel() == 1000 and int(new["w"].sum()) == 2000
    assert torch.all(idx % 2 == 1) and torch.all(idx > 1000)
    assert set(huge.tolist()) <= set(idx.tolist())


# -- sampling distribution ------------------------------------------------------------------------


def _draw_counts(n_add: int, n_draws: int, seed: int, unit: float = 1.0) -> dict[tuple[int, ...], int]:
    """Grow ``n_add`` of 4 absent edges with scores 1:2:3:4 (times ``unit``), ``n_draws`` times; count the chosen
    sets, each edge named by its score in units (1..4)."""
    kept = n_add  # gamma 1 -> n_add = kept
    mask = torch.zeros(1, kept + 4, dtype=torch.bool)
    mask[0, :kept] = True
    scores = torch.zeros(1, kept + 4, dtype=torch.float64)
    scores[0, kept:] = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) * unit
    gen = torch.Generator().manual_seed(seed)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n_draws):
        _, added = grow({"w": mask}, {"w": scores}, 1.0, generator=gen)
        key = tuple(int(i) - kept + 1 for i in added["w"])  # the scores of the chosen edges
        counts[key] = counts.get(key, 0) + 1
    return counts


def _within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("unit", [1.0, 1e-300, 1e300])  # PWMP scores span hundreds of decades on deep nets
def test_pwmp_picks_one_edge_in_proportion_to_score(unit):
    n = 4000 if unit == 1.0 else 2000
    counts = _draw_counts(n_add=1, n_draws=n, seed=0, unit=unit)
    for w in (1, 2, 3, 4):
        p = w / 10  # exact: score / sum of scores
        assert _within_4_sigma(counts.get((w,), 0), n, p), f"score {w}: {counts.get((w,), 0)}/{n} vs {p}"


def test_pwmp_without_replacement_matches_plackett_luce():
    # Exact Plackett-Luce probabilities of each 2-subset of scores {1, 2, 3, 4}, by enumerating ordered draws:
    # P(first i, then j) = w_i / W * w_j / (W - w_i).
    w = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    total = sum(w.values())
    exact = {}
    for i, j in itertools.permutations(w, 2):
        key = tuple(sorted((i, j)))
        exact[key] = exact.get(key, 0.0) + w[i] / total * w[j] / (total - w[i])
    assert math.isclose(sum(exact.values()), 1.0)
    # Hand check of one value: {3, 4} = 3/10 * 4/7 + 4/10 * 3/6 = 0.171428... + 0.2 = 0.371428...
    assert math.isclose(exact[(3, 4)], 0.3 * 4 / 7 + 0.4 * 0.5)
    n = 4000
    counts = _draw_counts(n_add=2, n_draws=n, seed=1)
    assert set(counts) <= set(exact)
    for key, p in exact.items():
        assert _within_4_sigma(counts.get(key, 0), n, p), f"subset {key}: {counts.get(key, 0)}/{n} vs {p:.4f}"
    # Inclusion probabilities are not the naive 2 w / W (0.2 for score 1): by hand, P(1 first) + P(1 second) =
    # 0.1 + 0.2 * 1/8 + 0.3 * 1/7 + 0.4 * 1/6 = 0.234524.
    incl_1 = sum(p for key, p in exact.items() if 1 in key)
    assert math.isclose(incl_1, 0.1 + 0.2 / 8 + 0.3 / 7 + 0.4 / 6) and abs(incl_1 - 0.234524) < 1e-6
    assert _within_4_sigma(sum(c for key, c in counts.items() if 1 in key), n, incl_1)


# -- devices --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("rule", ALL_RULES)
def test_grow_on_cuda_matches_cpu_with_the_same_seed(rule):
    masks = MaskSet({"a": torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < 0.1})
    scores = {"a": torch.rand(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))}
    cpu_new, cpu_added = grow(masks, scores, 0.5, rule=rule, generator=torch.Generator().manual_seed(3))
    gpu_scores = {n: s.cuda() for n, s in scores.items()}
    gpu_new, gpu_added = grow(masks.to("cuda"), gpu_scores, 0.5, rule=rule, generator=torch.Generator().manual_seed(3))
    assert gpu_new["a"].is_cuda and gpu_added["a"].is_cuda
    assert torch.equal(gpu_added["a"].cpu(), cpu_added["a"])


def test_growth_noise_is_drawn_on_the_scores_device(monkeypatch):
    from pwmpr import growth as growth_mod

    devices = []
    real_rand, real_generator = torch.rand, torch.Generator

    def recording_rand(*args, **kwargs):
        devices.append(torch.device(kwargs.get("device") or "cpu"))
        return real_rand(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", recording_rand)
    monkeypatch.setattr(growth_mod, "_generator_on", lambda device, seed: real_generator().manual_seed(seed))
    like = torch.empty(6, device="meta")
    noise = growth_mod._noise_like(6, like, torch.Generator().manual_seed(0), "gumbel")
    assert noise.device.type == "meta" and devices == [torch.device("meta")]
    again = growth_mod._noise_like(6, torch.empty(6), real_generator().manual_seed(0), "uniform")
    assert torch.equal(again, real_rand(6, dtype=torch.float64, generator=real_generator().manual_seed(0)))

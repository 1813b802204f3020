"""service.domain.stats: closed cases of the paired comparison, Welch, Holm, ranks and power."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from service.domain import stats as S

BASE = {0: 10.0, 1: 20.0, 2: 30.0, 3: 40.0, 4: 50.0}


def scaled(ratios, base=BASE):
    """A method cell whose per-seed ratio to `base` is ratios[i]."""
    return {s: v * r for (s, v), r in zip(base.items(), ratios)}


def with_p(p: float, sign: float = -1.0) -> S.Comparison:
    """A real paired comparison over 3 seeds whose two-sided p-value is exactly p: log ratios
    m - s, m, m + s have sd s, so t = m sqrt(3) / s; m is chosen from t_{2}^{-1}(1 - p/2)."""
    s = 0.05
    m = sign * sps.t.isf(p / 2, 2) * s / math.sqrt(3)
    return S.compare({i: math.exp(m + d) for i, d in enumerate((-s, 0.0, s))}, {0: 1.0, 1: 1.0, 2: 1.0})


# ---------------------------------------------------------------- one comparison


def test_identical_columns_are_a_tie_with_a_zero_interval():
    c = S.compare(BASE, BASE)
    assert (c.verdict, c.method, c.n, c.seeds) == ("tie", S.PAIRED, 5, (0, 1, 2, 3, 4))
    assert c.mean_log == 0 and c.sd == 0 and c.ci_log == (0.0, 0.0) and c.ci_pct == (0.0, 0.0)
    assert c.p == 1.0 and c.change_pct == 0.0


def test_constant_ten_percent_gain_with_tiny_noise_is_better():
    c = S.compare(scaled([0.9 * (1 + 1e-4 * (-1) ** s) for s in range(5)]), BASE)
    assert c.verdict == "better" and c.method == S.PAIRED and c.n == 5
    assert c.change_pct == pytest.approx(-10.0, abs=0.01)
    lo, hi = c.ci_pct
    assert -10.05 < lo < -10.0 < hi < -9.95
    assert c.p < 1e-9


def test_direction_flips_for_higher_is_better():
    lower = scaled([0.9, 0.91, 0.89, 0.9, 0.905])
    assert S.compare(lower, BASE, lower_is_better=True).verdict == "better"
    assert S.compare(lower, BASE, lower_is_better=False).verdict == "worse"
    higher = scaled([1.1, 1.11, 1.09, 1.1, 1.105])
    assert S.compare(higher, BASE, lower_is_better=False).verdict == "better"
    assert S.compare(higher, BASE, lower_is_better=True).verdict == "worse"


def test_two_seeds_by_hand():
    # d = (0.1, 0.3): mean 0.2, sd sqrt(0.02), se 0.1, t = 2 on 1 df, t_{0.975,1} = 12.7062047 (tables)
    c = S.compare({0: math.exp(0.1), 1: 2 * math.exp(0.3)}, {0: 1.0, 1: 2.0})
    assert (c.n, c.df) == (2, 1.0)
    assert c.mean_log == pytest.approx(0.2) and c.sd == pytest.approx(math.sqrt(0.02)) and c.t == pytest.approx(2.0)
    assert c.ci_log == pytest.approx((0.2 - 1.27062047, 0.2 + 1.27062047), abs=1e-7)
    assert c.p == pytest.approx(1 - 2 * math.atan(2) / math.pi)  # t on 1 df is Cauchy: P(|T| > 2)
    assert c.verdict == "underpowered"


@pytest.mark.parametrize("method, baseline", [
    ({0: 9.0}, {0: 10.0}),  # one shared seed
    ({0: 1.0}, {0: 100.0}),  # one seed, however large the change
    ({0: 9.0}, {0: 10.0, 1: 11.0}),  # one shared seed, one side with a single value
])
def test_one_seed_never_gives_a_verdict(method, baseline):
    c = S.compare(method, baseline)
    assert (c.verdict, c.method, c.n, c.seeds) == ("underpowered", S.UNTESTED, 1, (0,))
    assert math.isnan(c.p) and math.isnan(c.ci_log[0])
    assert c.change_pct == pytest.approx(100 * (method[0] / baseline[0] - 1))


def test_single_values_on_disjoint_seeds_state_n_and_the_geometric_mean_ratio():
    c = S.compare({0: 9.0}, {1: 10.0, 2: 10.0})
    assert (c.verdict, c.method, c.n, c.seeds) == ("underpowered", S.UNTESTED, 3, (0, 1, 2))
    assert (c.n_method, c.n_baseline) == (1, 2)
    assert c.change_pct == pytest.approx(-10.0)
    empty = S.compare({}, BASE)
    assert empty.verdict == "underpowered" and math.isnan(empty.mean_log) and empty.text() == "n/a underpowered (n=5)"


def test_wide_noise_is_underpowered():
    c = S.compare(scaled([0.7, 1.3, 0.9, 1.2]), BASE)
    assert c.verdict == "underpowered" and c.p > 0.05
    lo, hi = c.ci_pct
    assert lo < -5 and hi > 5


def test_interval_inside_the_margin_is_a_tie():
    c = S.compare(scaled([1.01, 0.99, 1.005, 0.995, 1.0]), BASE)
    assert c.verdict == "tie"
    assert math.log(0.95) <= c.ci_log[0] < 0 < c.ci_log[1] <= math.log(1.05)
    # the same interval against a 0.5% margin is no longer inside it
    assert S.compare(scaled([1.01, 0.99, 1.005, 0.995, 1.0]), BASE, margin=0.005).verdict == "underpowered"


def test_a_significant_change_smaller_than_the_margin_is_still_better():
    c = S.compare(scaled([0.98, 0.981, 0.979, 0.98, 0.9805]), BASE)
    assert c.ci_log[0] > math.log(0.95) and c.ci_log[1] < 0  # inside the margin and clear of 0
    assert c.verdict == "better" and c.change_pct == pytest.approx(-2.0, abs=0.05)


def test_paired_p_and_t_equal_scipy_ttest_rel():
    m, b = scaled([0.93, 0.97, 0.9, 1.01, 0.95]), BASE
    c = S.compare(m, b)
    ref = sps.ttest_rel(np.log(list(m.values())), np.log(list(b.values())))
    assert c.method == S.PAIRED
    assert c.t == pytest.approx(ref.statistic, rel=1e-12) and c.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert c.df == ref.df == 4


def test_disjoint_seeds_fall_back_to_welch_equal_to_scipy():
    m, b = {0: 9.0, 1: 9.5, 2: 8.7, 3: 9.9}, {10: 10.0, 11: 11.5, 12: 9.6}
    c = S.compare(m, b)
    ref = sps.ttest_ind(np.log(list(m.values())), np.log(list(b.values())), equal_var=False)
    assert (c.method, c.n, c.n_method, c.n_baseline) == (S.WELCH, 7, 4, 3)
    assert c.seeds == (0, 1, 2, 3, 10, 11, 12)
    assert c.t == pytest.approx(ref.statistic, rel=1e-12)
    assert c.df == pytest.approx(ref.df, rel=1e-12)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert c.ci_log == pytest.approx((lo, hi), rel=1e-10)


def test_the_rule_for_choosing_the_test():
    # one shared seed (1) but two values per side: Welch, not a pair of one
    assert S.compare({0: 9.0, 1: 9.5}, {1: 10.0, 2: 10.5}).method == S.WELCH
    # shared seeds of different experiments: pairing turned off
    assert S.compare(scaled([0.9, 0.91, 0.89]), BASE, pair_by_seed=False).method == S.WELCH
    # pairing drops seeds present on one side only
    c = S.compare(scaled([0.9, 0.91, 0.89]), BASE)
    assert (c.method, c.seeds, c.n) == (S.PAIRED, (0, 1, 2), 3)


def test_non_positive_or_non_finite_values_are_refused():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="at seed 1 is not positive and finite"):
            S.compare({0: 1.0, 1: bad}, {0: 1.0, 1: 1.0})
    with pytest.raises(ValueError, match="baseline value"):
        S.compare({0: 1.0, 1: 1.0}, {0: 1.0, 1: 0.0})


def test_bad_levels_and_too_few_values_raise():
    with pytest.raises(ValueError, match="margin must be in"):
        S.compare(BASE, BASE, margin=5)
    with pytest.raises(ValueError, match="alpha must be in"):
        S.compare(BASE, BASE, alpha=0)
    with pytest.raises(ValueError, match="at least 2 shared seeds"):
        S.paired({0: 1.0, 1: 2.0}, {1: 2.0, 2: 3.0})
    with pytest.raises(ValueError, match="at least 2 values per side"):
        S.welch({0: 1.0}, BASE)


def test_text():
    assert S.compare(BASE, BASE).text() == "+0.0% [+0.0, +0.0] tie (paired t on log ratios, n=5, p=1)"
    assert S.compare({0: 9.0}, {0: 10.0}).text() == "-10.0% underpowered (none (n < 2), n=1)"


# ---------------------------------------------------------------- tables


def test_holm_on_the_textbook_example_flips_borderline_verdicts():
    # Holm (1979) as on Wikipedia: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05; the sorted
    # thresholds 0.0125, 0.0167, 0.025, 0.05 reject 0.005 and 0.01 only. Adjusted: 0.03, 0.06, 0.06, 0.02.
    table = {i: {"debias": with_p(p)} for i, p in enumerate((0.01, 0.04, 0.03, 0.005))}
    assert [table[i]["debias"].p for i in range(4)] == pytest.approx([0.01, 0.04, 0.03, 0.005], rel=1e-9)
    assert all(table[i]["debias"].verdict == "better" for i in range(4))
    out = S.holm(table)
    assert [out[i]["debias"].p_adjusted for i in range(4)] == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-9)
    assert [out[i]["debias"].verdict for i in range(4)] == ["better", "underpowered", "underpowered", "better"]
    assert all(out[i]["debias"].family == 4 and out[i]["debias"].correction == "holm" for i in range(4))
    assert [out[i]["debias"].p for i in range(4)] == [table[i]["debias"].p for i in range(4)]  # raw p kept
    assert out[1]["debias"].ci_log == table[1]["debias"].ci_log  # the interval shown stays the 95% one


def test_holm_leaves_ties_and_untested_cells_and_refuses_twice():
    table = {"T=5": {"tie": S.compare(BASE, BASE), "one": S.compare({0: 1.0}, {0: 2.0}), "sig": with_p(0.02, sign=1)}}
    out = S.holm(table)["T=5"]
    assert out["tie"].verdict == "tie" and out["tie"].p_adjusted == 1.0
    assert out["one"].verdict == "underpowered" and math.isnan(out["one"].p_adjusted)
    assert out["sig"].p_adjusted == pytest.approx(0.04) and out["sig"].verdict == "worse"  # k = 2: untested not counted
    assert out["sig"].family == 2
    with pytest.raises(ValueError, match="already corrected"):
        S.holm(S.holm(table))


def test_compare_table_and_caption():
    cells = {
        ("digits", 5): {"constant": BASE, "debias": scaled([0.9, 0.91, 0.89, 0.9, 0.905]), "min_snr": BASE},
        ("digits", 20): {"constant": BASE, "debias": scaled([1.01, 0.99, 1.005, 0.995, 1.0])},
        ("digits", 50): {"debias": BASE},  # no baseline: nothing to compare with
    }
    table = S.compare_table(cells, "constant")
    assert set(table) == {("digits", 5), ("digits", 20)}
    assert {r: {w: c.verdict for w, c in by_w.items()} for r, by_w in table.items()} == {
        ("digits", 5): {"debias": "better", "min_snr": "tie"}, ("digits", 20): {"debias": "tie"}}
    assert S.caption(table) == ("paired t on log ratios; better/worse: Holm-corrected over 3 comparisons "
                                "at alpha 0.05; tie: 95% interval within ±5%")
    uncorrected = S.caption(S.compare_table(cells, "constant", correct=False))
    assert uncorrected.startswith("paired t on log ratios; better/worse: uncorrected")
    assert S.verdict_counts(table) == {"debias": {"better": 1, "worse": 0, "tie": 1, "underpowered": 0},
                                       "min_snr": {"better": 0, "worse": 0, "tie": 1, "underpowered": 0}}


def test_mean_ranks_average_ties_and_follow_the_direction():
    rows = {10: {"a": 1.0, "b": 2.0, "c": 2.0}, 20: {"a": 3.0, "b": 1.0, "c": 2.0}}
    # T=10: a 1, b 2.5, c 2.5; T=20: a 3, b 1, c 2
    assert S.mean_ranks(rows) == {"a": 2.0, "b": 1.75, "c": 2.25}
    # higher is better: T=10: a 3, b 1.5, c 1.5; T=20: a 1, b 3, c 2
    assert S.mean_ranks(rows, lower_is_better=False) == {"a": 2.0, "b": 2.25, "c": 1.75}
    assert S.mean_ranks({}) == {}
    with pytest.raises(ValueError, match="row 20 has weightings"):
        S.mean_ranks({10: {"a": 1.0, "b": 2.0}, 20: {"a": 1.0}})
    with pytest.raises(ValueError, match="not finite"):
        S.mean_ranks({10: {"a": 1.0, "b": math.nan}})


# ---------------------------------------------------------------- power


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_minimum_detectable_effect_round_trips_with_seeds_needed(n):
    mde = S.minimum_detectable_effect(n, 0.05)
    assert S.paired_power(n, 0.05, mde) == pytest.approx(0.8, abs=1e-9)
    assert S.seeds_needed(mde, 0.05) == n
    assert S.seeds_needed(mde * 1.01, 0.05) <= n and S.seeds_needed(mde * 0.99, 0.05) == n + 1
    # the same |log ratio| as a decrease needs the same seeds
    decrease = 100 * (math.exp(-math.log1p(mde / 100)) - 1)
    assert S.seeds_needed(decrease, 0.05) == n


def test_power_is_alpha_at_no_effect_and_matches_the_normal_approximation_at_many_seeds():
    assert S.paired_power(5, 0.05, 0.0) == pytest.approx(0.05, abs=1e-12)
    n, sd = 500, 0.05
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert S.minimum_detectable_effect(n, sd) == pytest.approx(100 * math.expm1(z * sd / math.sqrt(n)), rel=5e-3)


def test_minimum_detectable_effect_has_the_stated_power_by_simulation():
    n, sd = 3, 0.05
    delta = math.log1p(S.minimum_detectable_effect(n, sd) / 100)
    d = np.random.default_rng(0).normal(delta, sd, size=(40_000, n))
    hit = (sps.ttest_1samp(d, 0, axis=1).pvalue < 0.05).mean()
    assert hit == pytest.approx(0.8, abs=0.01)  # binomial sd 0.002


def test_power_arguments_are_checked():
    with pytest.raises(ValueError, match="n >= 2"):
        S.minimum_detectable_effect(1, 0.05)
    with pytest.raises(ValueError, match="positive and finite"):
        S.minimum_detectable_effect(5, 0.0)
    with pytest.raises(ValueError, match="power must be in"):
        S.minimum_detectable_effect(5, 0.05, power=0.01)
    with pytest.raises(ValueError, match="more than 1000 seeds"):
        S.seeds_needed(0.1, 0.05, max_n=1000)
    with pytest.raises(ValueError, match="> -100"):
        S.paired_power(5, 0.05, -100.0)


def test_importing_the_module_costs_neither_torch_nor_scipy():
    code = "import sys, service.domain.stats; print(sorted({'torch', 'scipy', 'service.store.db'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

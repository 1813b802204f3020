"""Statistics that decide: leaderboard cells compared with a baseline column, seed by seed.

Why paired. Runs of one experiment that share a seed share the initial weights, the data order,
the timesteps and the training noise (trainer/engine.py), and the evaluator draws sample k's
label, x_T and step noise from a generator seeded by (seed, k) (evaluator/sampling.py); so two
cells of one leaderboard row are common-random-number pairs (tests/test_pairing.py proves it).
The per-seed ratio method/baseline cancels the seed-to-seed spread that an unpaired comparison of
means has to beat.

Why log ratios. The metrics are positive distances or scores whose spread grows with their size.
log(method/baseline) is scale-free (a 10% gain reads the same at FD 50 and at FD 5), antisymmetric
(log(a/b) = -log(b/a)), and its mean back-transforms to a percentage change of the geometric mean,
100 (exp(mean) - 1). Values that are not positive and finite raise ValueError: a log ratio of
them does not exist, and no other scale is substituted silently.

The verdict rule (`verdict`), fixed here before any result is seen, the same for every cell:
- `better` / `worse`: the two-sided t-test of "mean log ratio = 0" has p < alpha (after Holm, the
  adjusted p), i.e. the (1 - alpha) interval is clear of 0; better is the metric's good side
  (lower_is_better). A significant difference smaller than the margin is still better/worse:
  `change_pct` says how large it is.
- `tie`: otherwise, when the (1 - alpha) interval lies inside [log(1 - margin), log(1 + margin)]
  (equivalence within the margin, TOST at alpha/2 per side; see `holm` for why ties are not
  corrected).
- `underpowered`: neither, or fewer than 2 values to test (never a verdict from n = 1).

Which test (`compare`): paired t on the log ratios of the shared seeds when at least 2 seeds are
shared; else Welch's t on the log values when each side has at least 2 values; else no test.

Torch-free and service-free; scipy is imported inside the functions that need it, so importing
this module costs numpy only.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

VERDICTS = ("better", "worse", "tie", "underpowered")
PAIRED = "paired t on log ratios"
WELCH = "Welch (unpaired)"
UNTESTED = "none (n < 2)"

R = TypeVar("R", bound=Hashable)  # a table's row key, e.g. (dataset, train_step, T, metric, sampler)

_NAN = float("nan")


@dataclass(frozen=True)
class Comparison:
    """One method cell against the baseline cell of its row, on the log scale.

    mean_log: mean of log(method/baseline) over the shared seeds (paired), or mean log(method) -
    mean log(baseline) (Welch). sd: sd of the per-seed log ratios (paired; the input of
    `minimum_detectable_effect`); for Welch sqrt(s_method^2 + s_baseline^2) of the log values, the
    sd of a log ratio of two unrelated runs (positively correlated pairs have less). ci_log: the
    two-sided (1 - alpha) t-interval of mean_log (nan when untested); p: the two-sided t-test
    p-value of mean_log = 0; p_adjusted: the p the verdict used (= p until `holm`). n: pairs
    (paired) or n_method + n_baseline values. seeds: the seeds whose values were used. family:
    comparisons in the correction (1: none). change_pct and ci_pct are the same in %.
    """

    verdict: str
    method: str
    n: int
    seeds: tuple[int, ...]
    n_method: int
    n_baseline: int
    mean_log: float
    sd: float
    t: float
    df: float
    ci_log: tuple[float, float]
    p: float
    p_adjusted: float
    lower_is_better: bool
    alpha: float
    margin: float
    correction: str = "none"
    family: int = 1

    @property
    def change_pct(self) -> float:
        """100 (exp(mean_log) - 1): the method's change of the (geometric-mean) value, in %."""
        return _pct(self.mean_log)

    @property
    def ci_pct(self) -> tuple[float, float]:
        """The (1 - alpha) interval of change_pct (the log interval transformed; not symmetric)."""
        return _pct(self.ci_log[0]), _pct(self.ci_log[1])

    def text(self) -> str:
        """'-10.0% [-10.4, -9.6] better (paired t on log ratios, n=5, p=2e-06)'."""
        if math.isnan(self.mean_log):
            return f"n/a {self.verdict} (n={self.n})"
        if math.isnan(self.ci_log[0]):
            return f"{self.change_pct:+.1f}% {self.verdict} ({self.method}, n={self.n})"
        lo, hi = self.ci_pct
        p = self.p_adjusted if self.correction != "none" else self.p
        return f"{self.change_pct:+.1f}% [{lo:+.1f}, {hi:+.1f}] {self.verdict} ({self.method}, n={self.n}, p={p:.2g})"


def _pct(log_ratio: float) -> float:
    return 100 * math.expm1(log_ratio)


def _check_levels(alpha: float, margin: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1) (a fraction: 0.05 is 5%), got {margin}")


def _logs(values: Mapping[int, float], side: str) -> dict[int, float]:
    """{seed: log value}; a value that is not positive and finite raises ValueError."""
    out = {}
    for seed, v in values.items():
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{side} value {v!r} at seed {seed} is not positive and finite: "
                             "log ratios need positive values (distances, scores)")
        out[seed] = math.log(v)
    return out


def verdict(mean_log: float, ci_log: tuple[float, float], p: float, *, lower_is_better: bool = True,
            alpha: float = 0.05, margin: float = 0.05) -> str:
    """The rule: p < alpha -> better/worse by the sign of mean_log and the metric's direction;
    else tie when ci_log lies inside [log(1 - margin), log(1 + margin)]; else (and for an
    untested comparison, p = nan) underpowered."""
    if math.isnan(p):
        return "underpowered"
    if p < alpha:
        return "better" if (mean_log < 0) == lower_is_better else "worse"
    if math.log1p(-margin) <= ci_log[0] and ci_log[1] <= math.log1p(margin):
        return "tie"
    return "underpowered"


def _t_test(mean: float, se: float, df: float, alpha: float) -> tuple[float, float, tuple[float, float]]:
    """(t, two-sided p, (1 - alpha) interval). se = 0 (every seed gives exactly the same ratio):
    the interval is the point; p = 1 when it is 0, else p = 0 (the limit of the t-test)."""
    from scipy import stats  # heavy: the module stays cheap to import

    if se == 0:
        return (0.0, 1.0, (mean, mean)) if mean == 0 else (math.copysign(math.inf, mean), 0.0, (mean, mean))
    t = mean / se
    q = float(stats.t.ppf(1 - alpha / 2, df))
    return t, float(2 * stats.t.sf(abs(t), df)), (mean - q * se, mean + q * se)


def paired(method: Mapping[int, float], baseline: Mapping[int, float], *, lower_is_better: bool = True,
           margin: float = 0.05, alpha: float = 0.05) -> Comparison:
    """Paired t-test on d_s = log(method_s / baseline_s) over the shared seeds s (at least 2, else
    ValueError): mean, sd (n - 1), t = mean / (sd / sqrt n) on n - 1 degrees of freedom (the
    statistic of scipy.stats.ttest_rel on the logs), the (1 - alpha) interval, `verdict`.
    Seeds present on one side only are left out."""
    _check_levels(alpha, margin)
    lm, lb = _logs(method, "method"), _logs(baseline, "baseline")
    seeds = tuple(sorted(set(lm) & set(lb)))
    if len(seeds) < 2:
        raise ValueError(f"a paired comparison needs at least 2 shared seeds, got {len(seeds)} (compare() "
                         "falls back to Welch or says underpowered)")
    d = np.array([lm[s] - lb[s] for s in seeds])
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    t, p, ci = _t_test(mean, sd / math.sqrt(n), n - 1, alpha)
    return Comparison(verdict(mean, ci, p, lower_is_better=lower_is_better, alpha=alpha, margin=margin), PAIRED,
                      n, seeds, n, n, mean, sd, t, float(n - 1), ci, p, p, lower_is_better, alpha, margin)


def welch(method: Mapping[int, float], baseline: Mapping[int, float], *, lower_is_better: bool = True,
          margin: float = 0.05, alpha: float = 0.05) -> Comparison:
    """Welch's t-test on the log values (each side at least 2, else ValueError): mean_log =
    mean log(method) - mean log(baseline), se = sqrt(s_m^2/n_m + s_b^2/n_b), Welch-Satterthwaite
    df (the statistic and df of scipy.stats.ttest_ind(equal_var=False) on the logs), the
    (1 - alpha) interval, `verdict`. Seeds are ignored (shared ones are treated as independent,
    which is conservative when their values correlate)."""
    _check_levels(alpha, margin)
    lm, lb = _logs(method, "method"), _logs(baseline, "baseline")
    if len(lm) < 2 or len(lb) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got {len(lm)} and {len(lb)}")
    a, b = np.array(list(lm.values())), np.array(list(lb.values()))
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else _NAN
    mean = float(a.mean() - b.mean())
    t, p, ci = _t_test(mean, se, df, alpha)
    sd = math.sqrt(float(a.var(ddof=1)) + float(b.var(ddof=1)))
    return Comparison(verdict(mean, ci, p, lower_is_better=lower_is_better, alpha=alpha, margin=margin), WELCH,
                      len(a) + len(b), tuple(sorted(set(lm) | set(lb))), len(a), len(b), mean, sd, t, df, ci, p, p,
                      lower_is_better, alpha, margin)


def compare(method: Mapping[int, float], baseline: Mapping[int, float], *, lower_is_better: bool = True,
            margin: float = 0.05, alpha: float = 0.05, pair_by_seed: bool = True) -> Comparison:
    """A method cell ({seed: value}) against its baseline cell. The rule for choosing: `paired`
    when at least 2 seeds are shared (and pair_by_seed: False for cells of different experiments,
    whose seeds are not common random numbers); else `welch` when each side has at least 2 values;
    else no test: `underpowered`, with n, the seeds and (from the shared seed, or else the
    geometric means) the point estimate, the interval and p nan."""
    _check_levels(alpha, margin)
    lm, lb = _logs(method, "method"), _logs(baseline, "baseline")
    shared = sorted(set(lm) & set(lb)) if pair_by_seed else []
    if len(shared) >= 2:
        return paired(method, baseline, lower_is_better=lower_is_better, margin=margin, alpha=alpha)
    if len(lm) >= 2 and len(lb) >= 2:
        return welch(method, baseline, lower_is_better=lower_is_better, margin=margin, alpha=alpha)
    if shared:
        n, seeds, mean = len(shared), tuple(shared), lm[shared[0]] - lb[shared[0]]
    else:
        n, seeds = len(lm) + len(lb), tuple(sorted(set(lm) | set(lb)))
        mean = float(np.mean(list(lm.values())) - np.mean(list(lb.values()))) if lm and lb else _NAN
    return Comparison("underpowered", UNTESTED, n, seeds, len(lm), len(lb), mean, _NAN, _NAN, _NAN, (_NAN, _NAN),
                      _NAN, _NAN, lower_is_better, alpha, margin)


# ---------------------------------------------------------------- tables
# A table is {row: {weighting: X}}, rows being the leaderboard's (dataset, step, T, metric, sampler).


def compare_table(cells: Mapping[R, Mapping[str, Mapping[int, float]]], baseline: str, *, lower_is_better: bool = True,
                  margin: float = 0.05, alpha: float = 0.05, pair_by_seed: bool = True, correct: bool = True,
                  ) -> dict[R, dict[str, Comparison]]:
    """Every other column of each row `compare`d with the row's `baseline` column, then (correct)
    `holm` over the whole table. A row without the baseline column has nothing to be compared
    with and is left out of the result."""
    table = {row: {w: compare(vals, by_w[baseline], lower_is_better=lower_is_better, margin=margin, alpha=alpha,
                              pair_by_seed=pair_by_seed)
                   for w, vals in by_w.items() if w != baseline}
             for row, by_w in cells.items() if baseline in by_w}
    return holm(table) if correct else table


def holm(table: Mapping[R, Mapping[str, Comparison]]) -> dict[R, dict[str, Comparison]]:
    """Holm's step-down correction over the k tested comparisons of a table (those with a p;
    untested ones pass through, p_adjusted nan): with p sorted ascending, p_adj(i) =
    max_{j <= i} min(1, (k - j + 1) p(j)), and better/worse need p_adj < alpha. Controls the
    family-wise rate of false better/worse claims at alpha, whatever the dependence between cells.

    Ties are not corrected. A tie claims the absence of a difference beyond the margin: it is an
    intersection-union test (both one-sided tests against the margins must reject), which needs no
    correction within a cell, and a claim that a method ties everywhere in the table is again an
    intersection of such tests, so its error stays <= alpha / 2 over the whole table (Berger 1982).
    The (1 - alpha) interval used is TOST at alpha / 2 per side, half the usual level. What is
    not controlled is the rate of at least one false tie among many separate per-cell tie claims;
    a false tie is likeliest when the true change sits just beyond the margin, where calling it a
    tie misstates it by little.

    Returns new comparisons (correction "holm", family k, p_adjusted, verdict); a table already
    corrected, or mixing alphas, raises ValueError."""
    flat = [(row, w, c) for row, by_w in table.items() for w, c in by_w.items()]
    if any(c.correction != "none" for _, _, c in flat):
        raise ValueError("the table is already corrected")
    if len({c.alpha for _, _, c in flat}) > 1:
        raise ValueError(f"one alpha per table, got {sorted({c.alpha for _, _, c in flat})}")
    tested = sorted((c.p, i) for i, (_, _, c) in enumerate(flat) if not math.isnan(c.p))
    k, running, adjusted = len(tested), 0.0, {}
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (k - rank) * p))
        adjusted[i] = running
    out: dict[R, dict[str, Comparison]] = {row: {} for row in table}
    for i, (row, w, c) in enumerate(flat):
        p_adj = adjusted.get(i, _NAN)
        out[row][w] = replace(c, p_adjusted=p_adj, correction="holm", family=k,
                              verdict=verdict(c.mean_log, c.ci_log, p_adj, lower_is_better=c.lower_is_better,
                                              alpha=c.alpha, margin=c.margin))
    return out


def caption(table: Mapping[R, Mapping[str, Comparison]]) -> str:
    """What the verdicts of a table mean, e.g. 'paired t on log ratios over seeds; better/worse:
    Holm-corrected over 12 comparisons at alpha 0.05; tie: 95% interval within ±5%'."""
    cs = [c for by_w in table.values() for c in by_w.values()]
    if not cs:
        return "no comparisons"
    levels = {(c.alpha, c.margin, c.correction, c.family) for c in cs}
    if len(levels) > 1:
        raise ValueError(f"one alpha, margin and correction per table, got {sorted(levels, key=str)}")
    alpha, margin, correction, family = levels.pop()
    methods = ", ".join(m for m in (PAIRED, WELCH, UNTESTED) if any(c.method == m for c in cs))
    corrected = f"Holm-corrected over {family} comparisons" if correction == "holm" else "uncorrected"
    return (f"{methods}; better/worse: {corrected} at alpha {alpha:g}; "
            f"tie: {100 * (1 - alpha):g}% interval within ±{100 * margin:g}%")


def verdict_counts(table: Mapping[R, Mapping[str, Comparison]]) -> dict[str, dict[str, int]]:
    """{weighting: {better, worse, tie, underpowered: count}} over the rows of a table."""
    out: dict[str, dict[str, int]] = {}
    for by_w in table.values():
        for w, c in by_w.items():
            out.setdefault(w, dict.fromkeys(VERDICTS, 0))[c.verdict] += 1
    return out


def mean_ranks(values: Mapping[R, Mapping[str, float]], *, lower_is_better: bool = True) -> dict[str, float]:
    """Mean over rows (e.g. the T values of a table) of each weighting's rank within the row:
    1 is best (lowest value when lower_is_better), equal values share the average of their ranks
    (1, 2.5, 2.5). Every row must hold the same weightings and finite values (else ValueError):
    a mean rank over different rows would not compare."""
    from scipy.stats import rankdata  # heavy: the module stays cheap to import

    rows = list(values.items())
    if not rows:
        return {}
    columns = list(rows[0][1])
    totals = dict.fromkeys(columns, 0.0)
    for row, by_w in rows:
        if set(by_w) != set(columns):
            raise ValueError(f"row {row!r} has weightings {sorted(by_w)}, the first row {sorted(columns)}")
        v = np.array([float(by_w[w]) for w in columns])
        if not np.isfinite(v).all():
            raise ValueError(f"row {row!r} has a value that is not finite: {dict(by_w)}")
        for w, r in zip(columns, rankdata(v if lower_is_better else -v, method="average")):
            totals[w] += float(r)
    return {w: s / len(rows) for w, s in totals.items()}


# ---------------------------------------------------------------- power (sizing a study)

_POWER_TOL = 1e-9  # minimum_detectable_effect's root tolerance; seeds_needed accepts power within it


def _check_design(n: int, sd: float, alpha: float, power: float | None = None) -> None:
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 seeds, got {n}")
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd of the log ratios must be positive and finite, got {sd}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1) = ({alpha}, 1), got {power}")


def paired_power(n: int, sd: float, effect_pct: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level alpha with n seeds, when the true mean log
    ratio is delta = log(1 + effect_pct/100) and the log ratios have sd `sd`: exact, from the
    noncentral t with n - 1 df and noncentrality |delta| sqrt(n) / sd,
    P(T > q) + P(T < -q), q = t_{1 - alpha/2, n - 1}. At effect 0 it is alpha. (The lower tail
    is taken as P(T' > q) under noncentrality -nc: scipy's nct.cdf far in a tail can return nan.)"""
    from scipy import stats  # heavy: the module stays cheap to import

    _check_design(n, sd, alpha)
    if not effect_pct > -100:
        raise ValueError(f"effect_pct must be > -100 (a ratio > 0), got {effect_pct}")
    df, nc = n - 1, abs(math.log1p(effect_pct / 100)) * math.sqrt(n) / sd
    q = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(q, df, nc) + stats.nct.sf(q, df, -nc))


def minimum_detectable_effect(n: int, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest change (in %, as an increase 100 (exp(delta) - 1); the same |delta| as a
    decrease is 100 (exp(-delta) - 1)) that a paired design with n seeds and log-ratio sd `sd`
    detects with the given power in a two-sided t-test at alpha (`paired_power`: noncentral t, not
    the normal approximation, which is too optimistic at few seeds). For large n it approaches
    100 (exp((z_{1-alpha/2} + z_power) sd / sqrt n) - 1)."""
    from scipy.optimize import brentq  # heavy: the module stays cheap to import
    from scipy.stats import norm  # heavy: the module stays cheap to import

    _check_design(n, sd, alpha, power)
    gap = lambda delta: paired_power(n, sd, _pct(delta), alpha=alpha) - power  # noqa: E731
    hi = 2 * (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(n)
    while gap(hi) < 0:
        hi *= 2
    return _pct(brentq(gap, 0.0, hi, xtol=1e-15, rtol=1e-13))


def seeds_needed(effect_pct: float, sd: float, *, alpha: float = 0.05, power: float = 0.8, max_n: int = 100_000) -> int:
    """The fewest seeds (>= 2) for which a paired design detects a change of effect_pct % (either
    sign) with the given power (`paired_power`, within 1e-9 so that it inverts
    `minimum_detectable_effect`). ValueError when even max_n seeds are not enough (or effect 0)."""
    _check_design(2, sd, alpha, power)
    reaches = lambda n: paired_power(n, sd, effect_pct, alpha=alpha) >= power - _POWER_TOL  # noqa: E731
    if reaches(2):
        return 2
    if not reaches(max_n):
        raise ValueError(f"a change of {effect_pct}% at sd {sd} needs more than {max_n} seeds")
    lo, hi = 2, max_n  # power grows with n: not reached at lo, reached at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi

"""Paired intervals and tests: coverage by simulation at the seed counts the studies use, exact
p-values against scipy and slow references, corrections against literal transcriptions."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from wsae_jax.evaluation import stats

# Paired differences a study may see: symmetric, skewed, heavy-tailed, and a contaminated mixture
# (one seed in ten far off), each with its true median.
DISTRIBUTIONS = {
  "normal": (lambda r, s: r.normal(size=s), 0.0),
  "exponential": (lambda r, s: r.exponential(size=s), math.log(2.0)),
  "lognormal σ=1": (lambda r, s: r.lognormal(0.0, 1.0, size=s), 1.0),
  "contaminated": (
    lambda r, s: np.where(r.uniform(size=s) < 0.1, 10.0, 1.0) * r.normal(size=s),
    0.0,
  ),
}


@pytest.mark.parametrize("n", (6, 10, 12))
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_interval_covers_the_median_at_least_nominally(name, n):
  draw, median = DISTRIBUTIONS[name]
  rng = np.random.default_rng(hash((name, n)) % 2**32)
  reps = 3000
  hits = 0
  for d in draw(rng, (reps, n)):
    ci = stats.paired_interval(d)
    hits += ci.lo <= median <= ci.hi
  coverage = hits / reps
  # Nominal 95%; 3,000 replicates give a standard error of ~0.4 points.
  assert coverage >= 0.93, f"{name}, n={n}: coverage {coverage:.3f}"
  assert ci.coverage >= 0.95


def test_mean_based_intervals_would_not_cover_skewed_differences():
  # Why the estimand is the median: the t-interval of the mean under-covers at these n.
  rng = np.random.default_rng(0)
  d = rng.exponential(size=(20_000, 10))
  m, s = d.mean(1), d.std(1, ddof=1) / np.sqrt(10)
  t = sp.t.ppf(0.975, 9)
  assert np.mean((m - t * s <= 1.0) & (1.0 <= m + t * s)) < 0.93


def test_interval_is_the_order_statistics_a_slow_reference_picks():
  for n in range(2, 16):
    d = np.random.default_rng(n).normal(size=n)
    ci = stats.paired_interval(d)
    # Slow reference: the widest symmetric rank pair whose exact binomial coverage is ≥ 95%.
    best = 1
    for r in range(1, n // 2 + 1):
      cov = 1 - 2 * sum(math.comb(n, i) for i in range(r)) / 2**n
      if cov >= 0.95:
        best = r
    s = np.sort(d)
    assert (ci.lo, ci.hi) == (s[best - 1], s[n - best])
    assert ci.coverage == pytest.approx(1 - 2 * sum(math.comb(n, i) for i in range(best)) / 2**n)
    assert ci.median == pytest.approx(np.median(d)) and ci.mean == pytest.approx(d.mean())


def test_five_seeds_cannot_reach_95_percent_and_say_so():
  ci = stats.paired_interval([-5.0, -4.0, -3.0, -2.0, -1.0])
  assert (ci.lo, ci.hi) == (-5.0, -1.0)
  assert ci.coverage == pytest.approx(1 - 2 / 32)  # 93.75%
  assert ci.p_value == pytest.approx(0.0625)
  assert stats.verdict(ci, "lower") == "not shown"


def test_sign_test_matches_an_exact_enumeration():
  d = np.array([-0.3, -0.1, -0.25, 0.05, -0.2, -0.4, 0.0])  # the zero is dropped: n = 6
  for alt in ("less", "greater", "two-sided"):
    # Enumerate all 2^6 sign patterns.
    obs_below = 5
    counts = [sum(s) for s in itertools.product((0, 1), repeat=6)]
    p_less = np.mean([c >= obs_below for c in counts])  # many below 0 → median < 0
    p_greater = np.mean([c <= obs_below for c in counts])
    ref = {"less": p_less, "greater": p_greater, "two-sided": min(1.0, 2 * min(p_less, p_greater))}[
      alt
    ]
    assert stats.sign_test(d, alternative=alt) == pytest.approx(ref)
  assert stats.sign_test([0.0, 0.0]) == 1.0
  with pytest.raises(stats.V.WSAEInputError, match="alternative"):
    stats.sign_test(d, alternative="lower")


def test_holm_and_bh_against_literal_definitions():
  p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.04])
  m = len(p)
  order = np.argsort(p, kind="stable")
  holm_ref = np.empty(m)
  for i, j in enumerate(order):
    holm_ref[j] = min(1.0, max(min(1.0, (m - k) * p[order[k]]) for k in range(i + 1)))
  bh_ref = np.empty(m)
  for i, j in enumerate(order):
    bh_ref[j] = min(1.0, min(p[order[k]] * m / (k + 1) for k in range(i, m)))
  np.testing.assert_allclose(stats.holm(p), holm_ref)
  np.testing.assert_allclose(stats.benjamini_hochberg(p), bh_ref)
  assert np.all(stats.holm(p) >= stats.benjamini_hochberg(p) - 1e-12)


def test_holm_controls_familywise_error_by_simulation():
  # 20 true nulls of 10-seed sign tests: P(any false "yes") must stay <= 5%.
  rng = np.random.default_rng(4)
  any_false = 0
  reps = 1000
  for _ in range(reps):
    ps = [stats.paired_interval(rng.normal(size=10)).p_value for _ in range(20)]
    any_false += np.any(stats.holm(ps) < 0.05)
  assert any_false / reps <= 0.05


@pytest.mark.parametrize(
  "diffs, claim, want",
  [
    ([-1.0, -2.0, -1.5, -1.2, -0.8, -0.3, -0.9, -1.1], "lower", "reproduced"),
    ([1.0, 2.0, 1.5, 1.2, 0.8, 0.3, 0.9, 1.1], "lower", "opposite"),
    ([-1.0, 1.0, -0.5, 0.4, 0.1, -0.2, 0.3, -0.7], "lower", "not shown"),
    ([1.0, 2.0, 1.5, 1.2, 0.8, 0.3, 0.9, 1.1], "higher", "reproduced"),
  ],
)
def test_directional_verdicts(diffs, claim, want):
  assert stats.verdict(stats.paired_interval(diffs), claim) == want


def test_adjusted_p_decides_the_verdict():
  ci = stats.paired_interval([-1.0] * 7 + [-0.5])  # p = 2/256
  assert stats.verdict(ci, "lower") == "reproduced"
  assert stats.verdict(ci, "lower", p_adjusted=0.2) == "not shown"


def test_noninferiority_counts_improvements_for_the_claim():
  better = [-0.3, -0.2, -0.25, -0.1, -0.4, -0.2, -0.15, -0.3]  # MSE fell on every seed
  assert stats.noninferiority_verdict(better, margin=0.05)[0] == "reproduced"
  within = [0.01, -0.02, 0.02, 0.0, 0.01, -0.01, 0.015, 0.02]
  assert stats.noninferiority_verdict(within, margin=0.05)[0] == "reproduced"
  worse = [0.3, 0.2, 0.25, 0.1, 0.4, 0.2, 0.15, 0.3]
  assert stats.noninferiority_verdict(worse, margin=0.05)[0] == "opposite"
  mixed = [0.3, -0.2, 0.25, -0.1, 0.4, 0.02, -0.15, 0.3]
  assert stats.noninferiority_verdict(mixed, margin=0.05)[0] == "not shown"
  # "worse" = lower (e.g. a consistency): the mirror image.
  assert (
    stats.noninferiority_verdict([-x for x in better], margin=0.05, worse="lower")[0]
    == "reproduced"
  )


def test_edge_cases():
  one = stats.paired_interval([1.0, np.nan])  # a diverged member leaves one pair
  assert one.n == 1 and np.isnan(one.lo)
  assert stats.verdict(one, "lower") == "not shown"
  with pytest.raises(stats.V.WSAEInputError, match="claim"):
    stats.verdict(one, "same")


def test_common_set_means_use_the_same_number_of_most_active_latents():
  # SAE a: 3 latents fire >= 5 times; SAE b: 5 do, two of them rarely-firing and inconsistent.
  sa, ca = np.array([0.9, 0.8, 0.7, 0.1]), np.array([50, 40, 30, 1])
  sb, cb = np.array([0.9, 0.2, 0.8, 0.7, 0.1]), np.array([60, 5, 45, 35, 6])
  a, b, n = stats.common_set_means(sa, ca, sb, cb, min_count=5)
  assert n == 3
  assert a == pytest.approx(0.8) and b == pytest.approx(0.8)  # b's top 3 by count: .9, .8, .7
  assert np.isnan(stats.common_set_means(sa, ca, sb, cb, min_count=100)[0])


def test_decide_dispatches_on_the_claim_and_round_trips_intervals():
  d = [-1.0, -2.0, -1.5, -1.2, -0.8, -0.3, -0.9, -1.1]
  ci = stats.paired_interval(d)
  assert stats.Interval.from_dict({**ci.as_dict(), "other": 1}) == ci
  assert stats.decide(ci, "lower", ci.p_value) == stats.verdict(ci, "lower") == "reproduced"
  p = stats.sign_test(d, margin=0.05, alternative="less")
  assert (
    stats.decide(ci, "non-inferior", p, margin=0.05)
    == stats.noninferiority_verdict(d, margin=0.05)[0]
    == "reproduced"
  )
  with pytest.raises(stats.V.WSAEInputError, match="margin"):
    stats.decide(ci, "non-inferior", p)

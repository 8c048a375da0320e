"""Paired bootstrap intervals against a slow reference, and verdicts read off intervals."""

import numpy as np
import pytest

from wsae_jax.evaluation import stats


def test_bootstrap_matches_a_slow_reference():
  d = np.array([-0.3, -0.1, -0.25, 0.05, -0.2])
  ci = stats.paired_bootstrap(d, num_resamples=4000, seed=3)
  rng = np.random.default_rng(3)
  idx = rng.integers(0, 5, (4000, 5))
  means = sorted(sum(d[i] for i in row) / 5 for row in idx)
  assert ci.mean == pytest.approx(d.mean())
  assert ci.lo == pytest.approx(np.quantile(means, 0.025))
  assert ci.hi == pytest.approx(np.quantile(means, 0.975))
  assert ci.n == 5 and ci.lo <= ci.mean <= ci.hi


def test_bootstrap_edge_cases():
  const = stats.paired_bootstrap([0.5] * 5)
  assert (const.lo, const.hi) == (0.5, 0.5)
  one = stats.paired_bootstrap([1.0, np.nan])  # a diverged member leaves one pair
  assert one.n == 1 and np.isnan(one.lo)
  assert stats.verdict(one, "lower") == "not reproduced"


@pytest.mark.parametrize("diffs, claim, want", [
    ([-1.0, -2.0, -1.5, -1.2, -0.8], "lower", "reproduced"),
    ([1.0, 2.0, 1.5, 1.2, 0.8], "lower", "opposite"),
    ([-1.0, 1.0, -0.5, 0.4, 0.1], "lower", "not reproduced"),
    ([1.0, 2.0, 1.5, 1.2, 0.8], "higher", "reproduced"),
    ([0.01, -0.02, 0.0, 0.015, -0.01], "same", "reproduced"),
    ([1.0, 1.1, 0.9, 1.2, 1.0], "same", "opposite"),
    ([0.05, -0.2, 0.3, 0.0, 0.1], "same", "not reproduced"),
])
def test_verdicts_follow_the_interval(diffs, claim, want):
  assert stats.verdict(stats.paired_bootstrap(diffs), claim, margin=0.1) == want

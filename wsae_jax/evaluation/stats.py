"""Paired comparisons over seeds: distribution-free intervals, exact tests, and verdicts under a
multiple-comparison correction.

A study trains an SAE and a WSAE per seed on identical batches from the same initialisation, so
the per-seed difference `WSAE − SAE` is the unit of evidence. With 5–10 seeds and skewed
differences no mean-based interval keeps its coverage (measured in tests/test_stats.py: the
Student-t interval covers 88% for exponential differences at n = 5 and 90% at n = 10, the
percentile bootstrap less), so the estimand here is the **median paired difference**:

* `paired_interval`: the order-statistic interval of the median (the inversion of the sign
  test). Its coverage is at least `level` for every continuous distribution, exactly computable
  (`Interval.coverage`), and checked by simulation for normal and skewed differences.
* `sign_test`: the exact binomial p-value of "the median difference is `margin`", one- or
  two-sided.
* `holm`, `benjamini_hochberg`: adjusted p-values across readings (family-wise error for the
  primary readings, false discovery rate for the exploratory ones).
* `verdict` / `noninferiority_verdict`: a claim's outcome from an adjusted p-value and the side
  the median lies on, never from a point estimate alone.

With n seeds the smallest two-sided sign-test p-value is 2^(1−n): 5 seeds can never show an
effect at 5% (0.0625); 10 seeds reach 0.002, enough for Holm over 25 readings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as _sp

from wsae_jax import _validate as V

VERDICTS = ("reproduced", "not shown", "opposite")
CLAIMS = ("lower", "higher", "non-inferior")


@dataclasses.dataclass(frozen=True)
class Interval:
  """The median of paired differences, its distribution-free interval and sign-test p-value."""

  median: float
  lo: float
  hi: float
  n: int
  """Number of pairs (seeds) with a finite difference."""
  mean: float
  """The mean difference (reported beside the median; the interval is for the median)."""
  coverage: float
  """The interval's exact coverage for any continuous distribution (≥ the level asked when
  n allows it; with too few seeds [min, max] and its coverage 1 − 2^(1−n))."""
  p_value: float
  """Two-sided exact sign-test p-value of "median difference = 0"."""

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d) -> "Interval":
    """The interval whose fields `d` holds (as `as_dict` wrote them, other keys ignored)."""
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def _finite(diffs) -> np.ndarray:
  d = np.asarray(diffs, np.float64).ravel()
  return d[np.isfinite(d)]


def order_statistic_rank(n: int, level: float) -> int:
  """The largest r with P(Bin(n, ½) ≤ r − 1) ≤ (1 − level)/2 (0 if none): the interval
  `[d_(r), d_(n−r+1)]` then covers the median with probability ≥ level."""
  a = (1.0 - level) / 2.0
  r = 0
  for cand in range(1, n // 2 + 1):
    if _sp.binom.cdf(cand - 1, n, 0.5) <= a:
      r = cand
  return r


def sign_test(diffs, *, margin: float = 0.0, alternative: str = "two-sided") -> float:
  """Exact sign-test p-value of H0: median(diffs) = margin.

  `alternative`: "less" (H1: median < margin), "greater", or "two-sided". Differences equal to
  `margin` are dropped (the usual convention); with none left the p-value is 1.
  """
  if alternative not in ("less", "greater", "two-sided"):
    raise V.WSAEInputError(
      f"alternative must be 'less', 'greater' or 'two-sided', got {alternative!r}."
    )
  d = _finite(diffs) - margin
  d = d[d != 0]
  if d.size == 0:
    return 1.0
  below = int(np.sum(d < 0))
  return float(
    _sp.binomtest(
      below,
      d.size,
      0.5,
      alternative={"less": "greater", "greater": "less", "two-sided": "two-sided"}[alternative],
    ).pvalue
  )


def paired_interval(diffs, *, level: float = 0.95) -> Interval:
  """The median of `diffs` (one paired difference per seed) with its order-statistic interval.

  NaN differences (a diverged member) are dropped; with fewer than 2 left the interval is
  (NaN, NaN).
  """
  V.check_range("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
  d = np.sort(_finite(diffs))
  n = int(d.size)
  if n < 2:
    v = float(d[0]) if n else float("nan")
    return Interval(v, float("nan"), float("nan"), n, v, float("nan"), 1.0)
  r = order_statistic_rank(n, level)
  r_used = max(r, 1)
  coverage = 1.0 - 2.0 * float(_sp.binom.cdf(r_used - 1, n, 0.5))
  return Interval(
    float(np.median(d)),
    float(d[r_used - 1]),
    float(d[n - r_used]),
    n,
    float(d.mean()),
    coverage,
    sign_test(d),
  )


def holm(p_values) -> np.ndarray:
  """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
  p = np.asarray(p_values, np.float64)
  m = p.size
  order = np.argsort(p, kind="stable")
  adj = np.empty(m)
  running = 0.0
  for i, j in enumerate(order):
    running = max(running, min(1.0, (m - i) * p[j]))
    adj[j] = running
  return adj


def benjamini_hochberg(p_values) -> np.ndarray:
  """Benjamini–Hochberg adjusted p-values (q-values; false discovery rate), in the input order."""
  p = np.asarray(p_values, np.float64)
  m = p.size
  order = np.argsort(p, kind="stable")
  adj = np.empty(m)
  running = 1.0
  for i in range(m - 1, -1, -1):
    j = order[i]
    running = min(running, p[j] * m / (i + 1))
    adj[j] = min(running, 1.0)
  return adj


def verdict(
  ci: Interval, claim: str, *, p_adjusted: float | None = None, alpha: float = 0.05
) -> str:
  """A directional claim's outcome from the sign test (adjusted across readings when
  `p_adjusted` is given) and the side the median lies on.

  `claim` "lower": the difference is claimed negative. "reproduced" if the (adjusted) two-sided
  p-value is below `alpha` and the median is negative, "opposite" if it is below `alpha` and the
  median positive, else "not shown" (the seeds cannot tell). "higher" is the mirror image.
  """
  if claim not in ("lower", "higher"):
    raise V.WSAEInputError(
      f"claim must be 'lower' or 'higher', got {claim!r} "
      "(use noninferiority_verdict for 'non-inferior')."
    )
  p = ci.p_value if p_adjusted is None else p_adjusted
  if not np.isfinite(ci.median) or not p < alpha or ci.median == 0:
    return "not shown"
  claimed_side = ci.median < 0 if claim == "lower" else ci.median > 0
  return "reproduced" if claimed_side else "opposite"


def noninferiority_verdict(
  diffs,
  *,
  margin: float,
  worse: str = "higher",
  alpha: float = 0.05,
  p_adjusted: float | None = None,
) -> tuple[str, float]:
  """ "At least as good, within `margin`": a one-sided sign test of H0: the median difference is
  `margin` worse, against H1: it is less than `margin` worse. Improvements count for the claim.

  `worse`: the direction that is worse ("higher" for an MSE). Returns `(verdict, p)` with `p` the
  unadjusted one-sided p-value; the verdict comes from `noninferiority_decision` (with
  `p_adjusted` in place of `p` when given).
  """
  if margin < 0:
    raise V.WSAEInputError(f"margin must be >= 0, got {margin}.")
  if worse not in ("higher", "lower"):
    raise V.WSAEInputError(f"worse must be 'higher' or 'lower', got {worse!r}.")
  sign = 1.0 if worse == "higher" else -1.0
  d = sign * _finite(diffs)  # "worse" is positive from here on
  p = sign_test(d, margin=margin, alternative="less")
  return noninferiority_decision(
    paired_interval(d), p if p_adjusted is None else p_adjusted, margin=margin, alpha=alpha
  ), p


def noninferiority_decision(ci: Interval, p: float, *, margin: float, alpha: float = 0.05) -> str:
  """The non-inferiority verdict from an interval of differences oriented so that positive is
  worse, and the (adjusted) one-sided p-value: "reproduced" if `p < alpha`; "opposite" if the
  whole interval lies beyond the margin; else "not shown"."""
  if p < alpha:
    return "reproduced"
  return "opposite" if np.isfinite(ci.lo) and ci.lo > margin else "not shown"


def decide(
  ci: Interval, claim: str, p_adjusted: float, *, margin: float | None = None, alpha: float = 0.05
) -> str:
  """The verdict of one reading: `claim` "lower" / "higher" by `verdict`, "non-inferior" by
  `noninferiority_decision` (with its `margin`), from the reading's (adjusted) p-value."""
  if claim == "non-inferior":
    if margin is None:
      raise V.WSAEInputError("a non-inferior claim needs its margin.")
    return noninferiority_decision(ci, p_adjusted, margin=margin, alpha=alpha)
  return verdict(ci, claim, p_adjusted=p_adjusted, alpha=alpha)


def common_set_means(
  score_a_M, count_a_M, score_b_M, count_b_M, *, min_count: int
) -> tuple[float, float, int]:
  """Means of a per-latent score over a common-size latent set of two SAEs.

  A mean over each SAE's own live latents compares different sets (an SAE with more rarely-firing
  latents averages over more, and noisier, scores). Here both means run over each SAE's `n` most
  frequently firing latents, `n` the smaller of the two counts of latents that fire at least
  `min_count` times. Returns `(mean_a, mean_b, n)`; NaN means when `n` is 0.
  """
  V.check_int("min_count", min_count, low=1)
  sa, ca = np.asarray(score_a_M, np.float64), np.asarray(count_a_M)
  sb, cb = np.asarray(score_b_M, np.float64), np.asarray(count_b_M)
  n = int(min(np.sum(ca >= min_count), np.sum(cb >= min_count)))
  if n == 0:
    return float("nan"), float("nan"), 0
  top = lambda s, c: float(np.mean(s[np.argsort(-c, kind="stable")[:n]]))
  return top(sa, ca), top(sb, cb), n

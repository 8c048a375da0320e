"""Paired comparisons over seeds: bootstrap confidence intervals and verdicts decided by them.

A study trains an SAE and a WSAE per seed on identical batches from the same initialisation, so
the per-seed difference `WSAE − SAE` is the unit of evidence. `paired_bootstrap` gives its mean and
a percentile-bootstrap interval; `verdict` reads a claim's outcome off the interval, never off
the point estimate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wsae_jax import _validate as V

VERDICTS = ("reproduced", "not reproduced", "opposite")


@dataclasses.dataclass(frozen=True)
class Interval:
  """The mean of paired differences and its confidence interval."""

  mean: float
  lo: float
  hi: float
  n: int
  """Number of pairs (seeds)."""

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def paired_bootstrap(diffs, *, level: float = 0.95, num_resamples: int = 10_000,
                     seed: int = 0) -> Interval:
  """Percentile-bootstrap interval of the mean of `diffs` (one paired difference per seed).

  With n seeds there are at most n^n distinct resamples, so for n = 5 the interval is coarse but
  honest: it never claims more than the seeds show. NaN differences (a diverged member) are
  dropped; with fewer than 2 left the interval is (NaN, NaN).
  """
  V.check_range("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
  d = np.asarray(diffs, np.float64).ravel()
  d = d[np.isfinite(d)]
  if d.size < 2:
    return Interval(float(d.mean()) if d.size else float("nan"), float("nan"), float("nan"), d.size)
  rng = np.random.default_rng(seed)
  means = d[rng.integers(0, d.size, (num_resamples, d.size))].mean(axis=1)
  a = (1.0 - level) / 2.0
  lo, hi = np.quantile(means, [a, 1.0 - a])
  return Interval(float(d.mean()), float(lo), float(hi), int(d.size))


def verdict(ci: Interval, claim: str, *, margin: float = 0.0) -> str:
  """Reads a claim's outcome off a paired interval of `WSAE − SAE` (or `after − before`).

  `claim`:
    * "lower": the claim says the difference is negative. Reproduced if the whole interval lies
      below 0, opposite if it lies above 0, else not reproduced (the seeds cannot tell).
    * "higher": the mirror image.
    * "same": the claim says there is no material difference. Reproduced if the interval lies
      inside `(-margin, margin)`, opposite if it lies wholly outside on one side, else not
      reproduced.
  """
  if not (np.isfinite(ci.lo) and np.isfinite(ci.hi)):
    return "not reproduced"
  if claim == "lower":
    return "reproduced" if ci.hi < 0 else "opposite" if ci.lo > 0 else "not reproduced"
  if claim == "higher":
    return "reproduced" if ci.lo > 0 else "opposite" if ci.hi < 0 else "not reproduced"
  if claim == "same":
    if -margin < ci.lo and ci.hi < margin:
      return "reproduced"
    return "opposite" if (ci.lo >= margin or ci.hi <= -margin) else "not reproduced"
  raise V.WSAEInputError(f"claim must be 'lower', 'higher' or 'same', got {claim!r}.")

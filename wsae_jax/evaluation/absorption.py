"""Feature absorption on first-letter classes, offline (SAEBench's method: Chanin et al. 2024, "A
is for Absorption"; the absorption fraction of Till): when a latent that seems to mean "starts with
S" stays silent on "short" because a more specific latent fires instead and carries the letter.

Per letter, from held-out rows whose token is a whole word (a leading space, then only letters):
  1. a logistic probe on the raw activations for "this word starts with the letter" against the
     other letters' words (balanced, fit on one half); letters whose probe F1 on the other half is
     below `min_probe_f1` are skipped, as SAEBench does (0.6);
  2. the letter's *main latents*: latents ranked by how much more they fire on the letter's words
     (mean difference, as `probing.k_sparse_probing`); k grows from 1 while one more latent raises
     the k-sparse probe's F1 by at least `f1_jump` (SAEBench's feature splits, 0.03), up to `max_k`;
  3. on the test half's words of the letter that the probe detects (logit > 0), with `p` the unit
     probe direction, `c_j = cos(p, W_dec[j])` and `π_j = z_j c_j` each latent's projection on it:
       * absorption fraction: 0 if the main latents' projection reaches `x·p`, or the (at most
         `max_absorbers`) largest projections of other latents with `c_j >= cos_fraction` and
         `π_j > 0` make up less than `proportion` of `x·p`; 1 if the main latents' projection is
         <= 0; else `a / (a + main)` with `a = min(absorbers, x·p − main)`;
       * full absorption: no main latent fires, and the latent with the largest projection has
         `c >= cos_full` and at least `proportion` of `x·p`.
The scores are the means over the letters (each letter weighted once). Beside them,
`latent_share`: the mean of `Σ_j π_j / x·p` over those words, how much of the probe's reading the
SAE's latents carry at all (near 0: no latent is letter-like, and absorption cannot be measured,
only its absence of evidence).

Differences from SAEBench: token rows from running text instead of "{word} has the first letter:"
prompts; one-vs-rest logistic probes instead of one 26-way probe; main latents ranked by mean
difference rather than by an L1 probe's weights.
"""

from __future__ import annotations

import string
from typing import Mapping

import numpy as np

from wsae_jax import _validate as V
from wsae_jax.evaluation import probing

EPS = 1e-8


def first_letter_classes(token_strings: Mapping[int, str]) -> dict[str, frozenset]:
  """Token ids that are a whole word (`" word"`: a leading space, then two or more letters), by
  the word's first letter (lower-cased); letters without words are left out."""
  out: dict[str, set] = {}
  for t, s in token_strings.items():
    word = s[1:] if s.startswith(" ") else ""
    if len(word) >= 2 and word.isascii() and word.isalpha():
      out.setdefault(word[0].lower(), set()).add(int(t))
  return {c: frozenset(out[c]) for c in string.ascii_lowercase if c in out}


def probe_projections(latents_RxK, values_RxK, cos_M) -> np.ndarray:
  """`π = z · c[latent]` for each sparse-code entry (0 on padding)."""
  lat = np.asarray(latents_RxK)
  return np.where(lat >= 0, np.asarray(values_RxK, np.float64) * cos_M[np.maximum(lat, 0)], 0.0)


def absorption_scores(
  latents_RxK,
  values_RxK,
  act_proj_R,
  cos_M,
  main,
  *,
  cos_full: float = 0.025,
  cos_fraction: float = 0.1,
  proportion: float = 0.4,
  max_absorbers: int = 3,
):
  """Per row: `(absorption fraction, full absorption, top projecting latent)` (see the module
  docstring); rows are words of one letter, `act_proj_R = x·p`, `main` its main latents."""
  lat = np.asarray(latents_RxK)
  val = np.asarray(values_RxK, np.float64)
  act = np.asarray(act_proj_R, np.float64)
  proj = probe_projections(lat, val, cos_M)
  is_main = np.isin(lat, list(main)) & (lat >= 0)
  main_proj = np.where(is_main, proj, 0.0).sum(1)
  cos_entry = np.where(lat >= 0, cos_M[np.maximum(lat, 0)], -np.inf)
  candidate = (lat >= 0) & ~is_main & (cos_entry >= cos_fraction) & (proj > 0)
  cand = np.sort(np.where(candidate, proj, 0.0), axis=1)[:, ::-1][:, :max_absorbers]
  absorbers = cand.sum(1)
  with np.errstate(divide="ignore", invalid="ignore"):
    share = absorbers / act
    a = np.minimum(absorbers, act - main_proj)
    partial = np.clip(a / (a + main_proj), 0.0, 1.0)
  fraction = np.where(
    (main_proj >= act) | ~(share >= proportion), 0.0, np.where(main_proj <= 0, 1.0, partial)
  )
  # Full absorption: the top projecting latent over all latents (an inactive latent projects 0).
  top_entry = np.argmax(np.where(lat >= 0, proj, -np.inf), axis=1)
  top_proj = np.maximum(proj[np.arange(len(lat)), top_entry], 0.0)
  top_latent = np.where(top_proj > 0, lat[np.arange(len(lat)), top_entry], -1)
  top_cos = np.where(top_latent >= 0, cos_M[np.maximum(top_latent, 0)], 0.0)
  main_silent = ~(is_main & (val >= EPS)).any(1)
  with np.errstate(divide="ignore", invalid="ignore"):
    full = main_silent & (top_cos >= cos_full) & (act >= 0) & (top_proj / act >= proportion)
  return fraction, full, top_latent


def feature_absorption(
  latents_BxK,
  values_BxK,
  x_BxD,
  tokens_B,
  letters: Mapping[str, frozenset],
  w_dec_MxD,
  *,
  max_k: int = 10,
  f1_jump: float = 0.03,
  min_probe_f1: float = 0.6,
  max_per_class: int = 2000,
  min_positives: int = 40,
  seed: int = 0,
  **thresholds,
) -> dict:
  """Absorption per letter (`letters`: token ids per letter, e.g. `first_letter_classes`) on
  held-out rows; `thresholds`: `cos_full`, `cos_fraction`, `proportion`, `max_absorbers` of
  `absorption_scores`. Letters with too few rows, or whose probe misses `min_probe_f1`, are
  reported as skipped."""
  lat, val = np.asarray(latents_BxK), np.asarray(values_BxK)
  x, tokens = np.asarray(x_BxD, np.float64), np.asarray(tokens_B)
  w_dec = np.asarray(w_dec_MxD, np.float64)
  if not (len(lat) == len(val) == len(x) == len(tokens)):
    raise V.WSAEInputError("latents, values, activations and tokens must have the same rows.")
  if w_dec.shape[1] != x.shape[1]:
    raise V.WSAEInputError(f"W_dec has d_in={w_dec.shape[1]}, the activations {x.shape[1]}.")
  d_sae = len(w_dec)
  dec_norm = np.maximum(np.linalg.norm(w_dec, axis=1), 1e-12)
  word = (
    np.isin(tokens, list(set().union(*letters.values())))
    if letters
    else np.zeros(len(tokens), bool)
  )
  rng = np.random.default_rng(seed)
  out = {}
  for letter, ids in letters.items():
    positive = np.isin(tokens, list(ids))
    halves = probing.balanced_halves(
      positive, word & ~positive, rng, max_per_class=max_per_class, min_positives=min_positives
    )
    if halves is None:
      out[letter] = {"words": int(positive.sum()), "skipped": "too few rows of one class"}
      continue
    fit, test = halves
    y_test = positive[test]
    w, b = probing.logistic_fit(x[fit], positive[fit])
    logit = x[test] @ w + b
    probe_f1 = probing.f1_score(y_test, logit > 0)
    entry = {"words": int(positive.sum()), "probe_f1": probe_f1}
    if probe_f1 < min_probe_f1:
      out[letter] = {**entry, "skipped": f"probe F1 below {min_probe_f1}"}
      continue
    main, f1s = _main_latents(lat, val, positive, fit, test, d_sae, max_k, f1_jump)
    detected = test[y_test & (logit > 0)]
    p = w / np.linalg.norm(w)
    cos = (w_dec @ p) / dec_norm
    fraction, full, top = absorption_scores(
      lat[detected], val[detected], x[detected] @ p, cos, main, **thresholds
    )
    with np.errstate(divide="ignore", invalid="ignore"):
      share = probe_projections(lat[detected], val[detected], cos).sum(1) / (x[detected] @ p)
    absorbing = top[full]
    latents, counts = np.unique(absorbing, return_counts=True)
    out[letter] = {
      **entry,
      "main_latents": main,
      "main_f1": f1s,
      "tokens": int(len(detected)),
      "absorption_fraction": float(fraction.mean()) if len(detected) else 0.0,
      "full_absorption_rate": float(full.mean()) if len(detected) else 0.0,
      "latent_share": float(np.nanmean(share)) if len(detected) else 0.0,
      "absorbing_latents": {
        int(a): int(c) for a, c in sorted(zip(latents, counts), key=lambda t: -t[1])
      },
    }
  return out


def _main_latents(lat, val, positive, fit, test, d_sae: int, max_k: int, f1_jump: float):
  """`(latents, F1 of each k)`: the latents with the largest mean difference between the
  letter's rows and the others, added one at a time while the k-sparse probe's F1 rises by at
  least `f1_jump` (SAEBench's feature split)."""
  order = np.argsort(-probing.mean_difference(lat[fit], val[fit], positive[fit], d_sae))
  f1s: list[float] = []
  for k in range(1, max_k + 1):
    f1s.append(probing.sparse_probe_f1(lat, val, positive, fit, test, order[:k].tolist()))
    if k > 1 and f1s[-1] - f1s[-2] < f1_jump:
      f1s.pop()
      break
  return order[: len(f1s)].tolist(), f1s


def summary(absorption: Mapping[str, dict]) -> dict:
  """Means over the evaluated letters (each letter once), as SAEBench reports them."""
  done = [e for e in absorption.values() if "absorption_fraction" in e]
  if not done:
    return {"letters": 0}
  return {
    "letters": len(done),
    "mean_absorption_fraction": float(np.mean([e["absorption_fraction"] for e in done])),
    "mean_full_absorption": float(np.mean([e["full_absorption_rate"] for e in done])),
    "mean_latent_share": float(np.mean([e["latent_share"] for e in done])),
    "mean_main_latents": float(np.mean([len(e["main_latents"]) for e in done])),
  }

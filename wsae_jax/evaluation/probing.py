"""k-sparse probing, offline (after SAEBench's sparse probing, Gurnee et al. 2023): does a handful
of latents carry a human-readable token property?

Binary token classes come from the tokenizer's strings (`TOKEN_CLASSES`: capitalised word, digit,
punctuation, opening quote, newline, an "-ly" word, a character's name from the Austen novels).
Per class, on a balanced sample of rows split in two halves: the k latents whose mean activation
differs most between the classes (on the first half), a logistic probe on those k activations
(fit on the first half), and its F1 on the second half; beside it the same probe on the raw
activations (all d_in dimensions), the ceiling a linear read-out reaches.
"""

from __future__ import annotations

import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from wsae_jax import _validate as V

# Single-token-or-not, these are the names of the novels' main characters (janeaustenr corpus).
AUSTEN_NAMES = frozenset(
  {
    "Elizabeth",
    "Darcy",
    "Jane",
    "Bingley",
    "Wickham",
    "Lydia",
    "Bennet",
    "Collins",
    "Emma",
    "Knightley",
    "Harriet",
    "Weston",
    "Elton",
    "Churchill",
    "Fairfax",
    "Elinor",
    "Marianne",
    "Willoughby",
    "Ferrars",
    "Brandon",
    "Dashwood",
    "Fanny",
    "Edmund",
    "Crawford",
    "Bertram",
    "Norris",
    "Anne",
    "Wentworth",
    "Elliot",
    "Musgrove",
    "Catherine",
    "Tilney",
    "Thorpe",
    "Morland",
    "Henry",
    "Mary",
    "Lucy",
    "Robert",
    "Thomas",
    "Isabella",
    "Eleanor",
    "Louisa",
  }
)


def _word(s: str) -> str:
  return s.strip()


TOKEN_CLASSES: dict[str, Callable[[str], bool]] = {
  "capitalised": lambda s: _word(s).isalpha() and _word(s)[:1].isupper(),
  "digit": lambda s: any(c.isdigit() for c in s),
  "punctuation": lambda s: (
    bool(_word(s)) and all(c in string.punctuation + "“”‘’—–…" for c in _word(s))
  ),
  "opening_quote": lambda s: (
    _word(s)[:1] in ('"', "“", "‘") or _word(s)[:1] == "'" and len(_word(s)) == 1
  ),
  "newline": lambda s: "\n" in s,
  "ly_word": lambda s: _word(s).isalpha() and len(_word(s)) > 3 and _word(s).lower().endswith("ly"),
  "character_name": lambda s: _word(s) in AUSTEN_NAMES,
}


def token_classes(
  token_strings: Mapping[int, str], classes: Mapping[str, Callable[[str], bool]] = TOKEN_CLASSES
) -> dict[str, frozenset]:
  """For each class, the token ids whose decoded string belongs to it."""
  return {
    name: frozenset(t for t, s in token_strings.items() if test(s))
    for name, test in classes.items()
  }


def f1_score(y_true, y_pred) -> float:
  y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
  tp = np.sum(y_true & y_pred)
  denom = 2 * tp + np.sum(y_true != y_pred)
  return float(2 * tp / denom) if denom else 1.0


def logistic_fit(X_NxF, y_N, *, l2: float = 1e-2) -> tuple[np.ndarray, float]:
  """A logistic regression fit by L-BFGS on standardised features (L2 penalty `l2` on the
  standardised weights); returns `(w, b)` in the raw coordinates: the logit is `X @ w + b`."""
  X = np.asarray(X_NxF, np.float64)
  y = np.asarray(y_N, np.float64)
  mu, sd = X.mean(0), X.std(0)
  sd = np.where(sd > 0, sd, 1.0)
  Z = (X - mu) / sd
  n, f = Z.shape

  def loss(theta):
    w, b = theta[:f], theta[f]
    t = Z @ w + b
    # log(1 + e^t) − y t, written stably; gradient (σ(t) − y).
    val = np.mean(np.logaddexp(0.0, t) - y * t) + 0.5 * l2 * w @ w
    g = (1.0 / (1.0 + np.exp(-t)) - y) / n
    return val, np.concatenate([Z.T @ g + l2 * w, [g.sum()]])

  theta = minimize(loss, np.zeros(f + 1), jac=True, method="L-BFGS-B").x
  w = theta[:f] / sd
  return w, float(theta[f] - mu @ w)


def logistic_probe(X_NxF, y_N, *, l2: float = 1e-2):
  """`logistic_fit` as a classifier: returns `predict(X) -> bool`."""
  w, b = logistic_fit(X_NxF, y_N, l2=l2)
  return lambda Xn: np.asarray(Xn, np.float64) @ w + b > 0


def dense_columns(latents_BxK, values_BxK, columns: Sequence[int]) -> np.ndarray:
  """The activations of the latents `columns` as a dense `(B, len(columns))` array."""
  lat, val = np.asarray(latents_BxK), np.asarray(values_BxK, np.float64)
  out = np.zeros((len(lat), len(columns)))
  for j, c in enumerate(columns):
    out[:, j] = np.where(lat == c, val, 0.0).sum(1)
  return out


def mean_difference(latents_BxK, values_BxK, y_B, d_sae: int) -> np.ndarray:
  """Per latent, mean activation on positive rows minus on negative rows (from sparse codes)."""
  lat, val, y = np.asarray(latents_BxK), np.asarray(values_BxK, np.float64), np.asarray(y_B, bool)
  act = lat >= 0
  rows = np.broadcast_to(y[:, None], lat.shape)[act]
  sums_pos = np.bincount(lat[act][rows], weights=val[act][rows], minlength=d_sae)
  sums_neg = np.bincount(lat[act][~rows], weights=val[act][~rows], minlength=d_sae)
  return sums_pos / max(y.sum(), 1) - sums_neg / max((~y).sum(), 1)


def balanced_halves(
  positive_B, negative_B, rng, *, max_per_class: int = 2000, min_positives: int = 40
):
  """Up to `max_per_class` rows of each class (`positive_B`, and `negative_B` for the rows that
  may serve as negatives), drawn at random, shuffled and split in halves: `(fit, test)` row
  indices, or None when either class has fewer than `min_positives` rows."""
  pos, neg = np.flatnonzero(positive_B), np.flatnonzero(negative_B)
  if len(pos) < min_positives or len(neg) < min_positives:
    return None
  m = min(len(pos), len(neg), max_per_class)
  rows = rng.permutation(
    np.concatenate([rng.choice(pos, m, replace=False), rng.choice(neg, m, replace=False)])
  )
  return rows[: len(rows) // 2], rows[len(rows) // 2 :]


def sparse_probe_f1(latents_BxK, values_BxK, y_B, fit, test, columns: Sequence[int]) -> float:
  """Test-half F1 of a logistic probe fit on the fit half's activations of the latents
  `columns` (a k-sparse probe)."""
  lat, val, y = np.asarray(latents_BxK), np.asarray(values_BxK), np.asarray(y_B, bool)
  probe = logistic_probe(dense_columns(lat[fit], val[fit], columns), y[fit])
  return f1_score(y[test], probe(dense_columns(lat[test], val[test], columns)))


def k_sparse_probing(
  latents_BxK,
  values_BxK,
  x_BxD,
  tokens_B,
  classes: Mapping[str, frozenset],
  d_sae: int,
  *,
  ks: Sequence[int] = (1, 2, 5),
  max_per_class: int = 2000,
  min_positives: int = 40,
  seed: int = 0,
) -> dict:
  """F1 of k-sparse probes (and of a probe on the raw activations) for each token class.

  Per class: up to `max_per_class` positive rows and as many negatives, drawn at random, split in
  halves (selection and fit on the first, F1 on the second). Classes with fewer than
  `min_positives` positive rows are reported as skipped.
  """
  tokens = np.asarray(tokens_B)
  lat, val, x = np.asarray(latents_BxK), np.asarray(values_BxK), np.asarray(x_BxD)
  if not (len(lat) == len(val) == len(x) == len(tokens)):
    raise V.WSAEInputError("latents, values, activations and tokens must have the same rows.")
  rng = np.random.default_rng(seed)
  out = {}
  for name, ids in classes.items():
    positive = np.isin(tokens, list(ids)) if ids else np.zeros(len(tokens), bool)
    halves = balanced_halves(
      positive, ~positive, rng, max_per_class=max_per_class, min_positives=min_positives
    )
    if halves is None:
      out[name] = {"positives": int(positive.sum()), "skipped": "too few rows of one class"}
      continue
    fit, test = halves
    diff = mean_difference(lat[fit], val[fit], positive[fit], d_sae)
    order = np.argsort(-np.abs(diff))
    entry: dict[str, Any] = {
      "positives": int(positive.sum()),
      "rows": int(len(fit) + len(test)),
      "k": {},
      "latents": {},
    }
    for k in ks:
      cols = order[:k].tolist()
      entry["k"][str(k)] = sparse_probe_f1(lat, val, positive, fit, test, cols)
      entry["latents"][str(k)] = cols
    raw = logistic_probe(x[fit], positive[fit])
    entry["raw_f1"] = f1_score(positive[test], raw(x[test]))
    out[name] = entry
  return out


def summary(probing: Mapping[str, dict]) -> dict:
  """Mean F1 over the probed classes, per k and for the raw activations."""
  done = [e for e in probing.values() if "k" in e]
  if not done:
    return {"classes": 0}
  ks = list(done[0]["k"])
  return {
    "classes": len(done),
    **{f"f1_k{k}": float(np.mean([e["k"][k] for e in done])) for k in ks},
    "f1_raw": float(np.mean([e["raw_f1"] for e in done])),
  }

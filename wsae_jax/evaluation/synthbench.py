"""SynthSAEBench's metrics, as SAELens's `eval_sae_on_synthetic_data` defines them.

Against the ground-truth dictionary `V (F, d)` and features `f (B, F)`:

- **MCC**: Hungarian matching of decoder rows to true directions on |cos|; the mean matched |cos|.
- **uniqueness**: distinct best-matching true features (argmax |cos| per latent) / latents.
- **precision / recall / F1 / accuracy**: each latent read as a detector (fires: `z ≠ 0`) of its
  best-matching feature (fires: `f > 0`); per-latent values (0 where undefined), averaged.
- **L0** (the SAE's and the data's), **dead latents** (never fired on the samples),
  **shrinkage** (mean `‖x̂‖ / ‖x‖` over rows with `‖x‖ > 1e-6`) and **explained variance**
  (`1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²)`).

`SynthBenchEvaluator` accumulates over batches like SAELens's calculators; `evaluate_synthbench`
scores one of our SAEs on fresh samples of a `SynthLaw` (`held_out_batches`, `score_batches`); `ground_truth_readings` gives this
library's own readings (L_GT, signed MCC, MMCS, shrinkage, ...) on the same model beside them. Equal to SAELens's evaluator on the same
SAE and samples (tests/test_synthbench.py), and exact on constructed SAEs whose answer is known.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class SynthBenchScores:
  """SynthSAEBench's readings of one SAE (SAELens's `SyntheticDataEvalResult`)."""

  true_l0: float
  sae_l0: float
  dead_latents: int
  shrinkage: float
  explained_variance: float
  mcc: float
  uniqueness: float
  precision: float
  recall: float
  f1_score: float
  accuracy: float

  def to_dict(self) -> dict:
    """SAELens's `SyntheticDataEvalResult.to_dict()` layout (classification nested)."""
    d = dataclasses.asdict(self)
    d["classification"] = {k: d.pop(k) for k in ("precision", "recall", "f1_score", "accuracy")}
    return d


def abs_cosine(directions_MxD, truth_FxD) -> np.ndarray:
  """`|cos|` between every learned direction and every true direction `(M, F)`, norms clamped at
  1e-8 as SAELens clamps them (`metrics.abs_cosine` on the true directions as columns)."""
  return metrics.abs_cosine(directions_MxD, np.asarray(truth_FxD).T, eps=1e-8)


def mean_correlation_coefficient(directions_MxD, truth_FxD) -> float:
  """SynthSAEBench's MCC: the mean |cos| over a maximum-weight one-to-one matching."""
  c = abs_cosine(directions_MxD, truth_FxD)
  rows, cols = linear_sum_assignment(c, maximize=True)
  return float(c[rows, cols].mean())


def uniqueness(directions_MxD, truth_FxD) -> float:
  """Distinct best-matching true features over the number of latents (0 for no latents)."""
  if np.shape(directions_MxD)[0] == 0:
    return 0.0
  best = abs_cosine(directions_MxD, truth_FxD).argmax(axis=1)
  return len(np.unique(best)) / np.shape(directions_MxD)[0]


@jax.jit
def _batch_counts(codes_BxM, recon_BxD, hidden_BxD, features_BxF, best_M):
  fires = codes_BxM != 0
  truth = features_BxF[:, best_M] > 0
  count = lambda a: a.sum(0, dtype=jnp.int32)
  norm_in = jnp.linalg.norm(hidden_BxD, axis=1)
  valid = norm_in > 1e-6
  ratio = jnp.where(valid, jnp.linalg.norm(recon_BxD, axis=1) / jnp.where(valid, norm_in, 1), 0)
  return {
    "tp": count(fires & truth),
    "fp": count(fires & ~truth),
    "fn": count(~fires & truth),
    "tn": count(~fires & ~truth),
    "fired": fires.any(0),
    "sae_l0": count(fires.sum(1)),
    "true_l0": count((features_BxF > 0).sum(1)),
    "shrinkage": ratio.sum(),
    "valid": count(valid),
    "sum_x": hidden_BxD.sum(0),
    "sum_sq": (hidden_BxD * hidden_BxD).sum(),
    "sum_res": ((hidden_BxD - recon_BxD) ** 2).sum(),
  }


@functools.partial(jax.jit, static_argnums=0)
def _forward(sae_cfg, params, x):
  """One compiled forward per config (shared by every SAE of a sweep with the same settings)."""
  return models.forward(sae_cfg, params, x)


class SynthBenchEvaluator:
  """Accumulates SynthSAEBench's readings over batches (sums in float64 on the host).

  Args:
    decoder_MxD: the SAE's decoder rows (what a latent writes).
    truth_FxD: the ground-truth feature vectors.
  """

  def __init__(self, decoder_MxD, truth_FxD):
    V.check_matrix("decoder", decoder_MxD)
    V.check_matrix("ground-truth feature vectors", truth_FxD)
    if np.shape(decoder_MxD)[1] != np.shape(truth_FxD)[1]:
      raise V.WSAEInputError(
        f"the decoder has rows of width {np.shape(decoder_MxD)[1]} but the ground-truth features "
        f"have width {np.shape(truth_FxD)[1]}; score an SAE trained on this model's activations."
      )
    self.decoder = np.asarray(decoder_MxD)
    self.truth = np.asarray(truth_FxD)
    self._best = jnp.asarray(abs_cosine(self.decoder, self.truth).argmax(axis=1), jnp.int32)
    self._sums: dict | None = None
    self.rows = 0

  def add(self, codes_BxM, recon_BxD, hidden_BxD, features_BxF) -> None:
    """One batch: SAE codes and reconstruction of `hidden`, and the features behind it."""
    if np.shape(codes_BxM)[1] != self.decoder.shape[0]:
      raise V.WSAEInputError(
        f"codes have {np.shape(codes_BxM)[1]} latents; the decoder has {self.decoder.shape[0]}."
      )
    if np.shape(features_BxF)[1] != self.truth.shape[0]:
      raise V.WSAEInputError(
        f"features have {np.shape(features_BxF)[1]} columns; the model has "
        f"{self.truth.shape[0]} features."
      )
    got = _batch_counts(codes_BxM, recon_BxD, hidden_BxD, features_BxF, self._best)
    got = {k: np.asarray(v, np.float64 if k != "fired" else bool) for k, v in got.items()}
    if self._sums is None:
      self._sums = got
    else:
      for k, v in got.items():
        self._sums[k] = self._sums[k] | v if k == "fired" else self._sums[k] + v
    self.rows += int(np.shape(codes_BxM)[0])

  def result(self) -> SynthBenchScores:
    s = self._sums
    if s is None:
      raise V.WSAEInputError("no batches were added; call add() before result().")
    n = self.rows
    tp, fp, fn, tn = s["tp"], s["fp"], s["fn"], s["tn"]
    ratio = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * precision * recall, precision + recall)
    mean_x = s["sum_x"] / n
    variance = s["sum_sq"] / n - float(mean_x @ mean_x)
    mse = s["sum_res"] / n
    if variance < 1e-10:
      explained = 1.0 if mse < 1e-10 else 0.0
    else:
      explained = 1.0 - mse / variance
    return SynthBenchScores(
      true_l0=float(s["true_l0"] / n),
      sae_l0=float(s["sae_l0"] / n),
      dead_latents=int((~s["fired"]).sum()),
      shrinkage=float(s["shrinkage"] / s["valid"]) if s["valid"] else 0.0,
      explained_variance=float(explained),
      mcc=mean_correlation_coefficient(self.decoder, self.truth),
      uniqueness=uniqueness(self.decoder, self.truth),
      precision=float(precision.mean()),
      recall=float(recall.mean()),
      f1_score=float(f1.mean()),
      accuracy=float(((tp + tn) / np.maximum(tp + fp + fn + tn, 1e-8)).mean()),
    )


def held_out_batches(source, num_samples: int, *, step0: int, batch_size: int = 4096):
  """`(hidden, features)` batches of `num_samples` rows of a `SynthBenchSource`, drawn at steps
  `step0, step0 + 1, …` of its stream (the last batch shorter): pick steps the SAE did not train
  on. Every caller that scores SAEs on "the same rows" draws them here."""
  V.check_int("num_samples", num_samples, low=1)
  V.check_int("batch_size", batch_size, low=1)
  done, step = 0, step0
  while done < num_samples:
    b = min(batch_size, num_samples - done)
    yield source.sample(step, b)
    done, step = done + b, step + 1


def score_batches(sae_cfg, params, law, batches) -> SynthBenchScores:
  """SynthSAEBench's readings of one of our SAEs on `(hidden, features)` batches of `law`."""
  ev = SynthBenchEvaluator(models.decoder_matrix(sae_cfg, params), law.feature_vectors)
  for x, f in batches:
    z, x_hat = _forward(sae_cfg, params, x)
    ev.add(z, x_hat, x, f)
  return ev.result()


def evaluate_synthbench(
  sae_cfg, params, source, *, num_samples: int = 100_000, batch_size: int = 4096, step0: int
) -> SynthBenchScores:
  """Scores one of our SAEs on `num_samples` fresh rows of a `SynthBenchSource`
  (`held_out_batches`: drawn batch by batch, so the rows need not fit in memory at once)."""
  batches = held_out_batches(source, num_samples, step0=step0, batch_size=batch_size)
  return score_batches(sae_cfg, params, source.law, batches)


def ground_truth_readings(sae_cfg, params, law, features_BxF) -> dict:
  """This library's own ground-truth readings beside SynthSAEBench's, on rows of `law` with
  features `features_BxF` (`metrics.evaluate` with the model's dictionary as `W_p` and its bias):
  L_GT by signed decoder matching, signed-correlation MCC, MMCS, features per latent, shrinkage
  and vanishing of the matched latents, and the reconstruction metrics."""
  return metrics.evaluate(
    sae_cfg,
    params,
    np.asarray(features_BxF),
    np.asarray(law.feature_vectors).T,
    bias_P=law.bias,
  )

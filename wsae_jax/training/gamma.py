"""γ kinds: how a run makes its γ (`wsae train --gamma`, a sweep member's `gamma_kind`).

Each `GammaKind` carries its behaviour: `check` refuses it for a run where it cannot apply (before
any work) and `make` builds γ — from a sample of the activations, from the synthetic W_p (the
oracle), from the SAE's own decoder while training (a `DecoderGamma` schedule), or from a `.npy`
file holding γ itself (`kind_of(path)`). Callers ask the kind; none switches on what it needs.
The estimators themselves live in `objectives.weights`; this module sits above `data`, whose W_p
the oracle reads.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import numpy as np

from wsae_jax import _validate as V
from wsae_jax.objectives import weights


def _resolve(value):
  """A sample given as an array or as a zero-argument function that draws it (drawn only by
  the kinds that need it)."""
  return value() if callable(value) else value


def _from_sample(fn: Callable[[Any, float], np.ndarray]):
  def make(kind, alpha, *, sample, W_p, every, d_in):
    if sample is None:
      raise V.WSAEInputError(f"γ kind {kind.name!r} needs a sample of the activations.")
    return fn(_resolve(sample), alpha)

  return make


def _oracle(kind, alpha, *, sample, W_p, every, d_in):
  if W_p is None:
    raise V.WSAEInputError(f"γ kind {kind.name!r} needs the synthetic W_p.")
  from wsae_jax.data.superposition import participation_ratio  # JAX: only when asked

  return weights.weights_from_polysemanticity(participation_ratio(np.asarray(W_p)), alpha)


def _decoder(kind, alpha, *, sample, W_p, every, d_in):
  return weights.DecoderGamma(alpha, every=every)


@dataclasses.dataclass(frozen=True)
class GammaKind:
  """A named way to make γ (`wsae train --gamma NAME`, a sweep member's `gamma_kind`): what it
  needs, its help line, and `make`, which builds it. `kind_of` also gives the kind of a `.npy`
  file holding γ itself."""

  name: str
  needs: str
  """What it is made from: "sample" (a sample of the training activations), "W_p" (the synthetic
  problem's superposition matrix: an oracle), "decoder" (the SAE's own decoder, re-estimated
  while training) or "file" (a `.npy` file holding γ)."""
  help: str
  """One line for `--help` and the docs."""
  maker: Callable[..., Any]
  """`(kind, alpha, *, sample, W_p, every, d_in) -> γ or a schedule` (see `make`)."""
  signed_alpha: bool = False
  """α < 0 is meaningful too (the variance kinds: low-variance dimensions weighted up)."""
  takes_alpha: bool = True
  """False for a file γ: it is γ itself, no exponent."""

  @property
  def re_estimated(self) -> bool:
    """γ changes while training (a schedule, `weights.DecoderGamma`); a run starts it at 1."""
    return self.needs == "decoder"

  def check(self, alpha, *, synthetic: bool) -> GammaKind:
    """Refuses this kind for this run (not usable on its data, no α, α < 0 where it means
    nothing, an unreadable file) before any work; returns the kind."""
    if self.needs == "W_p" and not synthetic:
      raise V.WSAEInputError(
        f"γ kind {self.name!r} needs the synthetic W_p; it is not known for real activations."
      )
    if self.needs == "file":
      if not pathlib.Path(self.name).is_file():
        raise V.WSAEInputError(f"{self.name!r} is not a file (a .npy array holding γ).")
      return self
    if alpha is None:
      raise V.WSAEInputError(f"γ kind {self.name!r} needs alpha (the exponent of γ).")
    V.check_range("alpha", alpha, low=None if self.signed_alpha else 0.0)
    return self

  def make(self, alpha=None, *, sample=None, W_p=None, every: int = 100, d_in: int | None = None):
    """γ of this kind: an array from `sample` (sample kinds; an array or a function drawing it),
    from `W_p` (the oracle), read from the file (checked against `d_in` when given), or a
    `weights.DecoderGamma` re-estimated every `every` steps."""
    return self.maker(self, alpha, sample=sample, W_p=W_p, every=every, d_in=d_in)


def _file(kind, alpha, *, sample, W_p, every, d_in):
  try:
    gamma = np.load(kind.name)
  except (OSError, ValueError) as e:
    raise V.WSAEInputError(f"{kind.name!r} cannot be read as a .npy array ({e}).") from None
  if d_in is None and sample is not None:
    d_in = int(np.shape(_resolve(sample))[-1])
  if d_in is None and W_p is not None:
    d_in = int(np.shape(W_p)[0])
  V.check_gamma(
    np.asarray(gamma, np.float32) if np.issubdtype(gamma.dtype, np.number) else gamma,
    d_in if d_in is not None else int(np.size(gamma)),
    name=kind.name,
  )
  return np.asarray(gamma, np.float32)


KINDS: dict[str, GammaKind] = {
  k.name: k
  for k in (
    GammaKind(
      "variance",
      "sample",
      "the paper's γ = Var^α (α < 0: low-variance dimensions weighted up, towards whitening)",
      _from_sample(weights.variance_weights),
      signed_alpha=True,
    ),
    GammaKind(
      "robust-variance",
      "sample",
      "Var over typical rows (without massive-norm ones), γ = Var^α (α may be < 0)",
      _from_sample(weights.robust_variance_weights),
      signed_alpha=True,
    ),
    GammaKind(
      "kurtosis",
      "sample",
      "γ = m̂^−α, m̂ the features per dimension estimated from the "
      "kurtosis (monosemantic dimensions weighted up)",
      _from_sample(
        lambda x, a: weights.weights_from_polysemanticity(weights.kurtosis_polysemanticity(x), a)
      ),
    ),
    GammaKind(
      "zero-fraction",
      "sample",
      "γ = m̂^−α, m̂ estimated from the fraction of exact zeros",
      _from_sample(
        lambda x, a: weights.weights_from_polysemanticity(
          weights.zero_fraction_polysemanticity(x), a
        )
      ),
    ),
    GammaKind(
      "oracle",
      "W_p",
      "synthetic data only: γ = PR^−α, PR the participation ratio of each row of W_p",
      _oracle,
    ),
    GammaKind(
      "decoder",
      "decoder",
      "γ = m̂^−α, m̂ the number of live latents writing to each "
      "dimension, re-estimated from the SAE's own decoder while training",
      _decoder,
    ),
  )
}
"""Every named γ kind, in one place: the CLI, sweeps and studies read their names here."""
SAMPLE_KINDS = tuple(k for k, v in KINDS.items() if v.needs == "sample")
"""The kinds made from a data sample (`gamma_from_sample`)."""


def kind_names(*, synthetic: bool) -> tuple[str, ...]:
  """The kinds a run can use: "oracle" needs a synthetic W_p."""
  return tuple(k for k, v in KINDS.items() if synthetic or v.needs != "W_p")


def kind_of(spec: str, *, synthetic: bool = True) -> GammaKind:
  """The kind `spec` names: one of `KINDS`, or a `.npy` file holding γ itself."""
  if spec in KINDS:
    return KINDS[spec]
  if str(spec).endswith(".npy"):
    return GammaKind(str(spec), "file", "γ itself, read from a .npy file", _file, takes_alpha=False)
  raise V.WSAEInputError(
    f"unknown γ kind {spec!r}; choose one of {kind_names(synthetic=synthetic)} or a .npy file."
  )


def check_kind(name: str, alpha, *, synthetic: bool) -> GammaKind:
  """The kind called `name`, checked for this run (known, usable on its data, given an α)."""
  return kind_of(name, synthetic=synthetic).check(alpha, synthetic=synthetic)


def make_gamma(name: str, alpha: float, *, sample=None, W_p=None, every: int = 100):
  """γ of kind `name` (`kind_of(name).make`): an array from `sample` (sample kinds) or `W_p`
  (the oracle), or a `weights.DecoderGamma` schedule re-estimated every `every` steps (the decoder kind)."""
  kind = KINDS[name] if name in KINDS else check_kind(name, alpha, synthetic=W_p is not None)
  return kind.make(alpha, sample=sample, W_p=W_p, every=every)


def gamma_from_sample(kind: str, x_sample_BxD, alpha: float):
  """γ of a named kind from a sample of activations (what `wsae train --gamma` uses)."""
  if kind not in SAMPLE_KINDS:
    raise V.WSAEInputError(
      f"unknown γ kind {kind!r} for a data sample; choose one of {SAMPLE_KINDS}."
    )
  return KINDS[kind].make(alpha, sample=x_sample_BxD)

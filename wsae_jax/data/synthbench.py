"""SynthSAEBench's ground truth in JAX: the law of SAELens's `SyntheticModel`, sampled on device.

SynthSAEBench (Chanin & Garriga-Alonso, arXiv 2602.14687; `sae_lens.synthetic`) draws hidden
activations `h = f V + b` from sparse non-negative features `f` with

- Zipfian (or linear / constant / random) firing probabilities `p`;
- firing correlated through a low-rank Gaussian copula: `g = ε Fᵀ + η √diag`, feature `i` fires
  where `g_i > Φ⁻¹(1 − p_i)` (independent Bernoulli(p) without a correlation);
- magnitudes `relu(mean_i + std_i · N(0, 1))`;
- a forest of hierarchies, applied level by level: a child is zeroed where its parent is off (or,
  with `scale_children_by_parent`, scaled by `parent / mean_parent`), then for each group of
  mutually exclusive children whose parent is on, one active child chosen uniformly is kept;
- an orthogonalised unit-norm dictionary `V` (F, d) and a bias `b`.

`SynthConfig` holds the construction in SAELens's own config schema (`to_dict()` is what SAELens
writes as `synthetic_model_config.json`), `build_law` constructs a `SynthLaw` from it (the same
hierarchy as SAELens's for a seed, because both draw it from Python's `random.Random(seed + 3)`;
the other random parts follow the same law with NumPy / JAX draws), `law_from_saelens` and
`load_saelens_model` take SAELens's own model (in memory or its saved folder) so both libraries can
train on one ground truth, and `SynthBenchSource` is a batch source for `train` and `train_sweep`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import math
import pathlib
import random
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from wsae_jax import _validate as V

CONFIG_FILE = "synthetic_model_config.json"
WEIGHTS_FILE = "synthetic_model.safetensors"
HIERARCHY_FILE = "hierarchy.json"
"""The file names of a SAELens-saved synthetic model folder."""

_HIERARCHY_DEFAULTS = {
  "total_root_nodes": 100,
  "branching_factor": 100,
  "max_depth": 2,
  "mutually_exclusive_portion": 0.0,
  "mutually_exclusive_min_depth": 0,
  "mutually_exclusive_max_depth": None,
  "compensate_probabilities": False,
  "scale_children_by_parent": False,
}
_FIRING_DEFAULTS = {
  "zipfian": {"exponent": 1.0, "max_prob": 0.3, "min_prob": 0.01},
  "linear": {"max_prob": 0.3, "min_prob": 0.01},
  "random": {"max_prob": 0.5, "min_prob": 0.01},
  "constant": {"probability": 0.1},
}
_MAGNITUDE_DEFAULTS: dict[str, dict[str, Any]] = {
  "constant": {"value": 1.0},
  "linear": {},
  "exponential": {},
  "folded_normal": {"mean": 0.0, "std": 0.1, "min_value": None, "max_value": None},
}
_MAGNITUDE_KINDS = tuple(_MAGNITUDE_DEFAULTS)


def _zipf() -> dict:
  return {"generator_name": "zipfian", **_FIRING_DEFAULTS["zipfian"]}


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """How to build a synthetic model, in SAELens's `SyntheticModelConfig` schema.

  The nested parts are the dicts SAELens writes: `firing_probability` with a `generator_name`
  ("zipfian", "linear", "random", "constant"); `hierarchy` (`total_root_nodes`,
  `branching_factor`, `max_depth`, `mutually_exclusive_portion`, ..., `compensate_probabilities`,
  `scale_children_by_parent`); `orthogonalization` (`num_steps`, `lr`); `correlation` (`rank`,
  `correlation_scale`); a magnitude is a float or a dict with a `generator_name` ("constant",
  "linear", "exponential", "folded_normal"). `bias`: False, True (norm 1) or the bias norm.
  """

  num_features: int
  hidden_dim: int
  firing_probability: Mapping[str, Any] = dataclasses.field(default_factory=_zipf)
  hierarchy: Mapping[str, Any] | None = None
  orthogonalization: Mapping[str, Any] | None = None
  correlation: Mapping[str, Any] | None = None
  std_firing_magnitudes: float | Mapping[str, Any] = 0.0
  mean_firing_magnitudes: float | Mapping[str, Any] = 1.0
  bias: bool | float = 1.0
  seed: int = 0

  def __post_init__(self):
    V.check_int("num_features", self.num_features, low=1)
    V.check_int("hidden_dim", self.hidden_dim, low=1)
    V.check_int("seed", self.seed, low=0)
    name = self.firing_probability.get("generator_name")
    if name not in _FIRING_DEFAULTS:
      raise V.WSAEInputError(
        f"firing_probability generator_name must be one of {tuple(_FIRING_DEFAULTS)}, got {name!r}."
      )
    for field in ("std_firing_magnitudes", "mean_firing_magnitudes"):
      m = getattr(self, field)
      if isinstance(m, Mapping) and m.get("generator_name") not in _MAGNITUDE_KINDS:
        raise V.WSAEInputError(
          f"{field} generator_name must be one of {_MAGNITUDE_KINDS}, got "
          f"{m.get('generator_name')!r}."
        )
    if self.hierarchy is not None:
      unknown = set(self.hierarchy) - set(_HIERARCHY_DEFAULTS)
      if unknown:
        raise V.WSAEInputError(
          f"unknown hierarchy fields {sorted(unknown)}; known: {sorted(_HIERARCHY_DEFAULTS)}."
        )

  def hierarchy_fields(self) -> dict | None:
    return None if self.hierarchy is None else {**_HIERARCHY_DEFAULTS, **self.hierarchy}

  def to_dict(self) -> dict:
    """The config as SAELens writes it (`SyntheticModelConfig.to_dict()`)."""
    d = dataclasses.asdict(self)
    d["firing_probability"] = {
      **_FIRING_DEFAULTS[self.firing_probability["generator_name"]],
      **self.firing_probability,
    }
    d["hierarchy"] = self.hierarchy_fields()
    for field in ("std_firing_magnitudes", "mean_firing_magnitudes"):
      m = getattr(self, field)
      if isinstance(m, Mapping):
        d[field] = {**_MAGNITUDE_DEFAULTS[m["generator_name"]], **dict(m)}
    if self.orthogonalization is not None:
      d["orthogonalization"] = {"num_steps": 200, "lr": 0.01, "chunk_size": 1024}
      d["orthogonalization"].update(self.orthogonalization)
    if self.correlation is not None:
      d["correlation"] = {"rank": 32, "correlation_scale": 0.1, "seed": None, **self.correlation}
    d["dtype"] = "float32"
    return json.loads(json.dumps(d))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> SynthConfig:
    """Reads SAELens's `synthetic_model_config.json` (or `to_dict()`)."""
    d = dict(d)
    if d.pop("dtype", "float32") != "float32":
      raise V.WSAEInputError("only float32 synthetic models are supported.")
    if d.get("seed") is None:
      raise V.WSAEInputError(
        "the synthetic model config has no seed; give it one so its construction is reproducible."
      )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise V.WSAEInputError(f"unknown synthetic model fields {sorted(unknown)}.")
    return cls(**d)


SYNTHBENCH_16K = SynthConfig(
  num_features=16_384,
  hidden_dim=768,
  firing_probability={
    "generator_name": "zipfian",
    "exponent": 0.5,
    "max_prob": 0.4,
    "min_prob": 5e-4,
  },
  hierarchy={
    "total_root_nodes": 128,
    "branching_factor": 4,
    "max_depth": 3,
    "mutually_exclusive_portion": 1.0,
    "mutually_exclusive_min_depth": 0,
    "compensate_probabilities": True,
    "scale_children_by_parent": True,
  },
  orthogonalization={"num_steps": 100, "lr": 3e-4},
  correlation={"rank": 25, "correlation_scale": 0.1},
  mean_firing_magnitudes={"generator_name": "linear", "start": 5.0, "end": 4.0},
  std_firing_magnitudes={"generator_name": "folded_normal", "mean": 0.5, "std": 0.5},
  bias=0.5,
  seed=42,
)
"""SynthSAEBench-16k's published construction (SAELens docs, `synth_sae_bench.md`; the model on
Hugging Face is `decoderesearch/synth-sae-bench-16k-v2`). Recommended SAE: width 4,096, L0 25."""

SYNTHBENCH_CPU = dataclasses.replace(
  SYNTHBENCH_16K,
  num_features=2_048,
  hidden_dim=128,
  hierarchy={**(SYNTHBENCH_16K.hierarchy or {}), "total_root_nodes": 16},
  correlation={"rank": 8, "correlation_scale": 0.1},
)
"""The 16k construction at a size a 2-core CPU trains in minutes: 2,048 features in 128 dimensions
(the same 16:1 ratio of features to dimensions), 16 hierarchy roots of branching 4 and depth 3
(1,360 features in trees, two thirds as in the 16k model), a rank-8 correlation."""


class SynthLaw(NamedTuple):
  """The parameters of a synthetic model (a pytree: pass it into `jit`).

  `levels[l] = (features, parents, rescale)`: the features at depth `l` with a parent, their
  parents, and whether each is scaled by its parent (else gated). `exclusive[l] = (siblings,
  parents)`: the mutually exclusive groups whose parent is at depth `l`, as `(G, S)` sibling
  indices padded with `num_features`, and each group's parent (-1: none).
  """

  feature_vectors: jax.Array
  bias: jax.Array
  firing_probabilities: jax.Array
  mean_magnitudes: jax.Array
  std_magnitudes: jax.Array
  correlation_factor: jax.Array | None
  correlation_diag_sqrt: jax.Array | None
  levels: tuple
  exclusive: tuple

  @property
  def num_features(self) -> int:
    return int(self.feature_vectors.shape[0])

  @property
  def hidden_dim(self) -> int:
    return int(self.feature_vectors.shape[1])

  def fingerprint(self) -> str:
    """sha1 of every parameter: names the ground truth in run records."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(self):
      a = np.asarray(leaf)
      h.update(f"{a.shape}{a.dtype}".encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Sampling


def sample_features(law: SynthLaw, key: jax.Array, batch_size: int) -> jax.Array:
  """`(batch_size, F)` ground-truth feature activations drawn from `law`."""
  k_fire, k_eta, k_mag, k_excl = jax.random.split(key, 4)
  p = law.firing_probabilities
  n = p.shape[0]
  if law.correlation_factor is None:
    fire = jax.random.uniform(k_fire, (batch_size, n)) < p
  else:
    rank = law.correlation_factor.shape[1]
    g = jax.random.normal(k_fire, (batch_size, rank)) @ law.correlation_factor.T
    diag_sqrt = law.correlation_diag_sqrt
    assert diag_sqrt is not None  # make_law sets both or neither
    g = g + jax.random.normal(k_eta, (batch_size, n)) * diag_sqrt
    fire = g > math.sqrt(2.0) * jax.scipy.special.erfinv(1.0 - 2.0 * p)
  magnitudes = law.mean_magnitudes + jax.random.normal(k_mag, (batch_size, n)) * law.std_magnitudes
  acts = jnp.where(fire, jax.nn.relu(magnitudes), 0.0)
  return jax.nn.relu(_apply_hierarchy(law, acts, k_excl))


def _apply_hierarchy(law: SynthLaw, acts: jax.Array, key: jax.Array) -> jax.Array:
  """Level by level: parents gate (or scale) their children, then exclusive groups keep one."""
  n = acts.shape[1]
  for depth, ((feats, parents, rescale), (siblings, group_parents)) in enumerate(
    zip(law.levels, law.exclusive)
  ):
    if feats.shape[0]:
      parent = acts[:, parents]
      on = parent > 0
      factor = on.astype(acts.dtype)
      if rescale is not None:
        scaled = jnp.where(on, parent / law.mean_magnitudes[parents], 0.0)
        factor = jnp.where(rescale, scaled, factor)
      acts = acts.at[:, feats].multiply(factor)
    if siblings.shape[0]:
      valid = siblings < n
      sib = acts.at[:, siblings].get(mode="fill", fill_value=0.0)  # (B, G, S)
      parent_on = jnp.where(
        group_parents >= 0, acts[:, jnp.maximum(group_parents, 0)] > 0, True
      )  # (B, G)
      active = (sib > 0) & valid & parent_on[..., None]
      scores = jax.random.uniform(jax.random.fold_in(key, depth), active.shape)
      winner = jnp.argmax(jnp.where(active, scores, -1.0), axis=-1)
      keep = jax.nn.one_hot(winner, siblings.shape[1], dtype=bool) | ~active
      acts = acts.at[:, siblings].set(jnp.where(keep, sib, 0.0), mode="drop")
  return acts


def hidden(law: SynthLaw, features_BxF: jax.Array) -> jax.Array:
  """Hidden activations `f V + b` of feature activations."""
  return features_BxF @ law.feature_vectors + law.bias


@functools.partial(jax.jit, static_argnames="batch_size")
def sample(law: SynthLaw, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """`(hidden (B, d), features (B, F))` drawn from `law`."""
  f = sample_features(law, key, batch_size)
  return hidden(law, f), f


class SynthBenchSource:
  """Batches of SynthSAEBench hidden activations: batch `t` is `sample(law, fold_in(seed, t))`.

  A batch source for `train`, `train_sweep` and `wsae` runs. `sample(step)` gives a batch with
  the ground-truth features behind it; held-out data uses steps past the run's end.
  """

  def __init__(self, law: SynthLaw, batch_size: int, *, seed: int = 0, name: str = "synthbench"):
    V.check_int("batch_size", batch_size, low=1)
    V.check_int("seed", seed, low=0)
    self.law = law
    self.batch_size = batch_size
    self.seed = seed
    self.name = name
    self.d_in = law.hidden_dim
    self._key = jax.random.key(seed)
    self._gen: dict = {}

  def sample(self, step: int, batch_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """`(hidden, features)` of step `step`."""
    return sample(self.law, jax.random.fold_in(self._key, step), batch_size or self.batch_size)

  def batch(self, step: int, sharding: NamedSharding | None = None) -> jax.Array:
    gen = self._gen.get(sharding)
    if gen is None:
      bs = self.batch_size
      gen = jax.jit(
        lambda law, s: hidden(law, sample_features(law, jax.random.fold_in(self._key, s), bs)),
        out_shardings=sharding,
      )
      self._gen[sharding] = gen
    return gen(self.law, jnp.int32(step))

  def describe(self) -> dict:
    return {
      "kind": "synthbench",
      "name": self.name,
      "seed": self.seed,
      "batch_size": self.batch_size,
      "d_in": self.d_in,
      "law_sha1": self.law.fingerprint(),
    }


# --------------------------------------------------------------------------------------------
# Construction


def build_law(cfg: SynthConfig) -> SynthLaw:
  """Constructs the synthetic model `cfg` describes (SAELens's construction, ported).

  The hierarchy is SAELens's for the same seed (both draw it from `random.Random(seed + 3)`);
  probabilities and the linear / exponential / constant magnitudes are SAELens's values; the
  dictionary, the correlation factor and folded-normal magnitudes follow SAELens's law with draws
  of their own (NumPy `default_rng([seed, part])`), so the model is a sibling of SAELens's, not
  a copy: use `law_from_saelens` to train on SAELens's exact model.
  """
  n, d = cfg.num_features, cfg.hidden_dim
  h = cfg.hierarchy_fields()
  roots = generate_hierarchy(n, h, seed=cfg.seed + 3) if h else []
  p = firing_probabilities(n, cfg.firing_probability, seed=cfg.seed)
  if roots and h and h["compensate_probabilities"]:
    p = np.minimum(p * correction_factors(roots, p), 1.0).astype(np.float32)
  std = magnitudes(n, cfg.std_firing_magnitudes, seed=cfg.seed + 1)
  mean = magnitudes(n, cfg.mean_firing_magnitudes, seed=cfg.seed + 2)
  factor = None
  if cfg.correlation is not None:
    c = {"rank": 32, "correlation_scale": 0.1, **cfg.correlation}
    factor = low_rank_correlation(n, c["rank"], c["correlation_scale"], seed=cfg.seed + 4)
  rng = np.random.default_rng([cfg.seed, 0])
  vectors = rng.standard_normal((n, d)).astype(np.float32)
  vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
  bias = np.zeros(d, np.float32)
  if cfg.bias:
    b = rng.standard_normal(d).astype(np.float32)
    bias = b / max(float(np.linalg.norm(b)), 1e-8) * (1.0 if cfg.bias is True else float(cfg.bias))
  if cfg.orthogonalization is not None:
    o = {"num_steps": 200, "lr": 0.01, **cfg.orthogonalization}
    vectors = np.asarray(orthogonalize(jnp.asarray(vectors), o["num_steps"], o["lr"]))
  return make_law(vectors, bias, p, mean, std, factor, roots)


def make_law(vectors, bias, probabilities, mean, std, correlation_factor=None, roots=()):
  """A `SynthLaw` from its parts: `vectors (F, d)`, `bias (d,)`, per-feature firing
  probabilities and magnitude mean / std, an optional `(F, rank)` correlation factor (its
  diagonal completes the unit diagonal) and the hierarchy as SAELens's node dicts."""
  vectors = np.asarray(vectors, np.float32)
  V.check_matrix("feature vectors", vectors)
  n = vectors.shape[0]
  arrays = {
    "firing probabilities": probabilities,
    "mean magnitudes": mean,
    "std magnitudes": std,
  }
  for name, a in arrays.items():
    if np.shape(a) != (n,):
      raise V.WSAEInputError(f"{name} must have shape ({n},), got {np.shape(a)}.")
    V.check_finite(name, a)
  p = np.asarray(probabilities, np.float32)
  if np.any((p < 0) | (p > 1)):
    raise V.WSAEInputError("firing probabilities must lie in [0, 1].")
  diag_sqrt = None
  if correlation_factor is not None:
    correlation_factor = np.asarray(correlation_factor, np.float32)
    diag = 1.0 - (correlation_factor.astype(np.float64) ** 2).sum(1)
    if correlation_factor.shape[0] != n or np.any(diag <= 0):
      raise V.WSAEInputError(
        f"the correlation factor must be ({n}, rank) with row norms below 1 (unit diagonal)."
      )
    diag_sqrt = jnp.asarray(np.sqrt(diag), jnp.float32)
    correlation_factor = jnp.asarray(correlation_factor)
  levels, exclusive = compile_hierarchy(roots, n)
  return SynthLaw(
    feature_vectors=jnp.asarray(vectors),
    bias=jnp.asarray(np.asarray(bias, np.float32)),
    firing_probabilities=jnp.asarray(p),
    mean_magnitudes=jnp.asarray(np.asarray(mean, np.float32)),
    std_magnitudes=jnp.asarray(np.asarray(std, np.float32)),
    correlation_factor=correlation_factor,
    correlation_diag_sqrt=diag_sqrt,
    levels=levels,
    exclusive=exclusive,
  )


def firing_probabilities(n: int, spec: Mapping[str, Any], *, seed: int) -> np.ndarray:
  """SAELens's firing-probability generators (`zipfian` and `linear` to float32 rounding)."""
  name = spec["generator_name"]
  s = {**_FIRING_DEFAULTS[name], **{k: v for k, v in spec.items() if k != "generator_name"}}
  if name == "constant":
    return np.full(n, s["probability"], np.float32)
  lo, hi = s["min_prob"], s["max_prob"]
  if not 0 < lo <= hi <= 1:
    raise V.WSAEInputError(f"firing probabilities need 0 < min_prob <= max_prob <= 1, got {s}.")
  if n == 1:
    return np.asarray([hi], np.float32)
  if name == "linear":
    return np.linspace(hi, lo, n, dtype=np.float32)
  if name == "random":
    return (lo + (hi - lo) * np.random.default_rng([seed, 1]).random(n)).astype(np.float32)
  ranks = np.arange(1, n + 1, dtype=np.float32)
  probs = (1.0 / ranks ** np.float32(s["exponent"])).astype(np.float32)
  return (lo + (hi - lo) * (probs - probs.min()) / (probs.max() - probs.min())).astype(np.float32)


def magnitudes(n: int, spec, *, seed: int) -> np.ndarray:
  """SAELens's magnitude generators (a float: that value for every feature)."""
  if not isinstance(spec, Mapping):
    return np.full(n, float(spec), np.float32)
  name = spec["generator_name"]
  if name == "constant":
    return np.full(n, spec.get("value", 1.0), np.float32)
  if name in ("linear", "exponential"):
    start, end = float(spec["start"]), float(spec["end"])
    if n == 1:
      return np.asarray([start], np.float32)
    if name == "linear":
      return np.linspace(start, end, n, dtype=np.float32)
    return (start * (end / start) ** np.linspace(0, 1, n)).astype(np.float32)
  rng = np.random.default_rng([seed, 2])
  x = np.abs(spec.get("mean", 0.0) + rng.standard_normal(n) * spec.get("std", 0.1))
  return np.clip(x, spec.get("min_value"), spec.get("max_value")).astype(np.float32)


def low_rank_correlation(n: int, rank: int, scale: float, *, seed: int) -> np.ndarray:
  """SAELens's random low-rank correlation factor: N(0, scale²) entries, rows whose squared norm
  would leave a diagonal below 0.01 rescaled to leave exactly 0.01."""
  V.check_int("rank", rank, low=1)
  factor = (np.random.default_rng([seed, 3]).standard_normal((n, rank)) * scale).astype(np.float32)
  sq = (factor**2).sum(1)
  capped = 1.0 - sq < 0.01
  factor[capped] *= np.sqrt(0.99 / sq[capped])[:, None]
  return factor


@functools.partial(jax.jit, static_argnames="num_steps")
def orthogonalize(vectors: jax.Array, num_steps: int, lr: float) -> jax.Array:
  """SAELens's orthogonalisation: Adam on `Σ_{i≠j} (v_i·v_j)² + F Σ_i (‖v_i‖² − 1)²`, then unit
  rows. The off-diagonal sum is `‖VᵀV‖²_F − Σ‖v_i‖⁴`, so no `(F, F)` matrix is formed."""
  import optax

  n = vectors.shape[0]

  def loss(v):
    sq = (v * v).sum(1)
    gram = v.T @ v
    return (gram * gram).sum() - (sq * sq).sum() + n * ((sq - 1.0) ** 2).sum()

  opt = optax.adam(lr)
  v0 = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)

  def step(carry, _):
    v, s = carry
    updates, s = opt.update(jax.grad(loss)(v), s, v)
    return (optax.apply_updates(v, updates), s), None

  (v, _), _ = jax.lax.scan(step, (v0, opt.init(v0)), None, length=num_steps)
  return v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-8)


# --------------------------------------------------------------------------------------------
# Hierarchy (SAELens's node dicts: feature_index, children, mutually_exclusive_children,
# scale_children_by_parent)


def generate_hierarchy(n: int, h: Mapping[str, Any], *, seed: int) -> list[dict]:
  """SAELens's `generate_hierarchy`, draw for draw (Python's `random.Random(seed)`): roots take
  features 0, 1, ...; each tree grows breadth-first to `max_depth`; a portion of the eligible
  parents get mutually exclusive children."""
  rng = random.Random(seed)
  counter = iter(range(n))
  branching = h["branching_factor"]

  def node() -> dict | None:
    idx = next(counter, None)
    if idx is None:
      return None
    return {
      "feature_index": idx,
      "children": [],
      "mutually_exclusive_children": False,
      "scale_children_by_parent": False,
    }

  roots, parents = [], []
  for _ in range(h["total_root_nodes"]):
    r = node()
    if r is None:
      break
    roots.append(r)
    parents.append((r, 0))
  level = [(r, 0) for r in roots]
  while level:
    nxt = []
    for parent, depth in level:
      if depth >= h["max_depth"]:
        continue
      count = branching if isinstance(branching, int) else rng.randint(*branching)
      for _ in range(count):
        child = node()
        if child is None:
          break
        parent["children"].append(child)
        if depth + 1 < h["max_depth"]:
          nxt.append((child, depth + 1))
          parents.append((child, depth + 1))
    level = nxt
  lo, hi = h["mutually_exclusive_min_depth"], h["mutually_exclusive_max_depth"]
  eligible = [
    p for p, dep in parents if dep >= lo and (hi is None or dep <= hi) and len(p["children"]) >= 2
  ]
  k = int(len(eligible) * h["mutually_exclusive_portion"])
  if k > 0:
    for i in rng.sample(range(len(eligible)), k):
      eligible[i]["mutually_exclusive_children"] = True
  if h["scale_children_by_parent"]:
    for p, _ in parents:
      p["scale_children_by_parent"] = True
  return roots


def correction_factors(roots, p) -> np.ndarray:
  """SAELens's probability compensation: `1 / p_parent` for a child, times `1 + Σ_{siblings}
  p_j / p_parent` inside a mutually exclusive group, so each feature fires at about its base
  probability once the hierarchy is applied."""
  p = np.asarray(p, np.float32)
  out = np.ones_like(p)

  def visit(node, parent_p):
    idx = node.get("feature_index")
    if idx is not None:
      if parent_p > 0:
        out[idx] = 1.0 / parent_p
      node_p = float(p[idx])
    else:
      node_p = parent_p
    for c in node.get("children", []):
      visit(c, node_p)
    kids = [
      c["feature_index"] for c in node.get("children", []) if c.get("feature_index") is not None
    ]
    if node.get("mutually_exclusive_children") and len(kids) >= 2 and node_p > 0:
      total = sum(float(p[k]) for k in kids)
      for k in kids:
        out[k] *= 1.0 + max(0.0, total - float(p[k])) / node_p

  for r in roots:
    visit(r, 1.0)
  return out


def compile_hierarchy(roots, n: int) -> tuple[tuple, tuple]:
  """Node dicts to per-depth index arrays (`SynthLaw.levels`, `SynthLaw.exclusive`), walking the
  forest breadth-first as SAELens does; each feature may appear once."""
  feats: dict[int, list] = collections.defaultdict(list)
  groups: dict[int, list] = collections.defaultdict(list)
  seen: set[int] = set()
  queue = collections.deque((r, -1, 0, False) for r in roots)
  any_rescale = False
  while queue:
    node, parent, depth, rescale = queue.popleft()
    idx = node.get("feature_index")
    if idx is not None:
      if not 0 <= idx < n or idx in seen:
        raise V.WSAEInputError(
          f"hierarchy feature {idx} is out of range [0, {n}) or appears twice; a feature has at "
          f"most one parent."
        )
      seen.add(idx)
      if parent >= 0:
        feats[depth].append((idx, parent, rescale))
        any_rescale |= rescale
    children = node.get("children", [])
    kids = [c["feature_index"] for c in children if c.get("feature_index") is not None]
    if node.get("mutually_exclusive_children") and len(kids) >= 2:
      groups[depth].append((-1 if idx is None else idx, kids))
    for c in children:
      queue.append(
        (c, parent if idx is None else idx, depth + 1, bool(node.get("scale_children_by_parent")))
      )
  depths = max([*feats, *groups], default=-1) + 1
  levels, exclusive = [], []
  for dep in range(depths):
    f = feats.get(dep, [])
    levels.append(
      (
        jnp.asarray([a for a, _, _ in f], jnp.int32),
        jnp.asarray([b for _, b, _ in f], jnp.int32),
        jnp.asarray([c for _, _, c in f], bool) if any_rescale else None,
      )
    )
    g = groups.get(dep, [])
    width = max((len(k) for _, k in g), default=0)
    sib = np.full((len(g), width), n, np.int32)
    for i, (_, kids) in enumerate(g):
      sib[i, : len(kids)] = kids
    exclusive.append((jnp.asarray(sib), jnp.asarray([q for q, _ in g], jnp.int32)))
  return tuple(levels), tuple(exclusive)


# --------------------------------------------------------------------------------------------
# SAELens interop


def law_from_saelens(model) -> SynthLaw:
  """The exact law of a SAELens `SyntheticModel` (its dictionary, bias, firing probabilities,
  magnitudes, correlation factor and hierarchy), so both libraries sample one ground truth."""
  gen, fd = model.activation_generator, model.feature_dict
  as_np = lambda t: t.detach().cpu().float().numpy()
  factor = None
  if model.correlation_matrix is not None:
    factor = as_np(model.correlation_matrix.correlation_factor)
  roots = [] if model.hierarchy is None else model.hierarchy.to_dict()["roots"]
  return make_law(
    as_np(fd.feature_vectors),
    as_np(fd.bias),
    as_np(gen.firing_probabilities),
    as_np(gen.mean_firing_magnitudes),
    as_np(gen.std_firing_magnitudes),
    factor,
    roots,
  )


def load_saelens_model(folder) -> tuple[SynthConfig, SynthLaw]:
  """Reads a folder SAELens's `SyntheticModel.save` wrote (its config, dictionary, firing
  probabilities, correlation factor and hierarchy). SAELens does not save the magnitudes: they
  are rebuilt from the config as SAELens rebuilds them, which for a folded-normal magnitude takes
  torch's generator (install the `interop` extra)."""
  from safetensors.numpy import load_file

  folder = pathlib.Path(folder)
  for name in (CONFIG_FILE, WEIGHTS_FILE):
    if not (folder / name).is_file():
      raise V.WSAEInputError(
        f"{folder} has no {name}; pass a folder written by SAELens's SyntheticModel.save()."
      )
  cfg = SynthConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
  w = load_file(str(folder / WEIGHTS_FILE))
  roots = []
  if (folder / HIERARCHY_FILE).is_file():
    roots = json.loads((folder / HIERARCHY_FILE).read_text())["roots"]
  n = cfg.num_features
  law = make_law(
    w["feature_vectors"],
    w["bias"],
    w["firing_probabilities"],
    _saelens_magnitudes(n, cfg.mean_firing_magnitudes, cfg.seed + 2),
    _saelens_magnitudes(n, cfg.std_firing_magnitudes, cfg.seed + 1),
    w.get("correlation_factor"),
    roots,
  )
  return cfg, law


def _saelens_magnitudes(n: int, spec, seed: int) -> np.ndarray:
  if not (isinstance(spec, Mapping) and spec["generator_name"] == "folded_normal"):
    return magnitudes(n, spec, seed=seed)
  try:
    import torch
  except ImportError as e:  # pragma: no cover - the interop extra installs torch
    raise V.WSAEInputError(
      "this synthetic model's folded-normal magnitudes are drawn by torch's generator; install "
      'torch (pip install "wsae-jax[interop]") to read it exactly.'
    ) from e
  g = torch.Generator().manual_seed(seed)
  x = (spec.get("mean", 0.0) + torch.randn(n, generator=g) * spec.get("std", 0.1)).abs()
  if spec.get("min_value") is not None or spec.get("max_value") is not None:
    x = x.clamp(min=spec.get("min_value"), max=spec.get("max_value"))
  return x.numpy().astype(np.float32)

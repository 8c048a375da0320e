"""What every SAE architecture provides, and the registry that finds it.

An architecture is one file in this package: a frozen config (a subclass of `SAEConfig`) and an
`Architecture` record of pure functions, registered with `register`. Nothing outside this package
branches on the architecture: training, sweeps, the optimiser, SAELens folders and the CLI ask the
record.

Parameters are plain dicts with SAELens names and shapes: `W_enc (d_in, d_sae)`,
`W_dec (d_sae, d_in)`, `b_enc (d_sae,)`, `b_dec (d_in,)`, and `threshold` where an architecture has
one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wsae_jax import _validate as V

Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SAEConfig:
  """Fields every architecture has. Configs are hashable (valid `static_argnums` values) and are
  checked when they are built."""

  d_in: int
  """Input (observed activation) dimension."""
  d_sae: int
  """Number of latents (dictionary size)."""
  dtype: str = "float32"
  """Parameter dtype."""

  architecture: ClassVar[str] = ""

  def __post_init__(self):
    V.check_int("d_in", self.d_in, low=1)
    V.check_int("d_sae", self.d_sae, low=1)
    if self.dtype not in ("float32", "float64", "bfloat16"):
      raise V.WSAEInputError(
        f"dtype must be 'float32', 'float64' or 'bfloat16', got {self.dtype!r}."
      )

  def to_dict(self) -> dict:
    return {"architecture": self.architecture, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  """A config field a sweep may vary per member (traced: one compiled program serves every value).

  `check(cfg, value)` raises `WSAEInputError` for a value the compiled program cannot take.
  """

  name: str
  dtype: Any
  check: Callable[[SAEConfig, Any], None]
  config_is_max: bool = False
  """Members may not exceed the config's value (Top-k compiles its selection for `cfg.k`): a
  sweep file sets the config's value to the largest of its grid."""


@dataclasses.dataclass(frozen=True)
class SAELensTensors:
  """An SAE in SAELens' terms: cfg.json fields (beyond d_in, d_sae) and the weight tensors."""

  fields: dict
  tensors: dict[str, np.ndarray]


def _no_optimizer_parts(cfg) -> tuple[list, list]:
  return [], []


def _no_post_update(cfg, params, stats):
  return params


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One SAE architecture: everything the rest of the library needs to know about it.

  `loss(cfg, params, x_BxD, *, gamma, dead_M, hp) -> (scalar, aux)`: `aux` holds scalars
  (`loss`, `recon`, `mse`, `fvu`, `l0`, the architecture's penalties) plus `fired`, a `(d_sae,)`
  mask of latents active anywhere in the batch. `hp` maps hyperparameter names to (possibly
  traced) values that override the config's.
  """

  name: str
  config: type
  init: Callable[[SAEConfig, jax.Array], Params]
  pre_activations: Callable[[SAEConfig, Params, jax.Array], jax.Array]
  encode: Callable[[SAEConfig, Params, jax.Array], jax.Array]
  """Latents at inference, `(batch, d_sae)`."""
  decode: Callable[[SAEConfig, Params, jax.Array], jax.Array]
  decoder_matrix: Callable[[SAEConfig, Params], jax.Array]
  loss: Callable[..., tuple[jax.Array, dict]]
  saelens_name: str
  """SAELens' architecture name of the exported folder."""
  to_saelens: Callable[[SAEConfig, Params], SAELensTensors]
  from_saelens: (
    Callable[[Mapping, Mapping[str, np.ndarray], Mapping], tuple[SAEConfig, dict]] | None
  )
  """`(cfg.json, tensors, our saved config or {}) -> (config, params)` (tensors already checked
  against d_in, d_sae); None if folders of `saelens_name` load as another architecture."""
  saelens_default: bool = False
  """Folders of `saelens_name` written by other tools load as this architecture."""
  hyperparameters: tuple[Hyperparameter, ...] = ()
  uses_dead_latents: bool = False
  """The loss takes `dead_M` (AuxK); the config has `dead_after_tokens`."""
  optimizer_parts: Callable[
    [SAEConfig], tuple[list[optax.GradientTransformation], list[optax.GradientTransformation]]
  ] = _no_optimizer_parts
  """`(before clipping and Adam, after Adam)`: e.g. unit-norm decoder rows."""
  post_update: Callable[[SAEConfig, Params, dict], Params] = _no_post_update
  """Non-gradient parameter updates after each step, from the loss's aux (BatchTopK's threshold)."""
  closed_form: bool = False
  """Thm 1's closed form is an optimum of this model class (the tied theory SAE), so comparing a
  trained SAE with it is meaningful; for other architectures it is another model class."""
  batch_coupled: bool = False
  """The training forward couples the rows of a batch (BatchTopK's selection): the batch cannot
  be split over devices by hand (`shard_map`), only by `jax.jit`'s sharding."""


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
  if arch.name in ARCHITECTURES:
    raise ValueError(f"architecture {arch.name!r} is registered twice.")
  if getattr(arch.config, "architecture", None) != arch.name:
    raise ValueError(f"{arch.config.__name__}.architecture must be {arch.name!r}.")
  ARCHITECTURES[arch.name] = arch
  return arch


def get(cfg_or_name) -> Architecture:
  """The registered architecture of a config or an architecture name."""
  name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.architecture
  if name not in ARCHITECTURES:
    raise V.WSAEInputError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}.")
  return ARCHITECTURES[name]


def for_saelens(saelens_name: str, ours: Mapping) -> Architecture:
  """The architecture a SAELens folder loads as: the one we saved it from (in cfg.json's
  `wsae_jax.config`) when that one can read it back, else the default for its SAELens name."""
  mine = ARCHITECTURES.get(str(ours.get("architecture")))
  if mine is not None and mine.saelens_name == saelens_name and mine.from_saelens is not None:
    return mine
  for arch in ARCHITECTURES.values():
    if arch.saelens_name == saelens_name and arch.saelens_default:
      return arch
  known = sorted({a.saelens_name for a in ARCHITECTURES.values() if a.saelens_default})
  raise V.WSAEInputError(
    f"SAELens architecture {saelens_name!r} is not supported ({', '.join(known)} are)."
  )


def make_config(architecture: str, **kwargs) -> SAEConfig:
  """Builds the config for an architecture name (see `ARCHITECTURES`)."""
  return V.build_dataclass(get(architecture).config, kwargs, f"{architecture} SAE config")


def config_from_dict(d, where: str) -> SAEConfig:
  """The config a `to_dict()` record describes (as saved in checkpoints and sweep files).

  Raises `WSAEInputError` naming `where` and the field for a missing architecture, an unknown
  field or a value of the wrong type.
  """
  V.check_fields(where, d, {"architecture": str}, allow_unknown=True)
  fields = {k: v for k, v in d.items() if k != "architecture"}
  try:
    return make_config(d["architecture"], **fields)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------------------
# Generic entry points: dispatch on the config's architecture.
# ------------------------------------------------------------------------------------------------


def init(cfg: SAEConfig, key: jax.Array) -> Params:
  """Initial parameters of `cfg`'s architecture."""
  return get(cfg).init(cfg, key)


def pre_activations(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> jax.Array:
  """Encoder pre-activations `(batch, d_sae)`, before the activation function."""
  return get(cfg).pre_activations(cfg, params, x_BxD)


def encode(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> jax.Array:
  """Latent activations `z`, shape `(batch, d_sae)`."""
  return get(cfg).encode(cfg, params, x_BxD)


def decode(cfg: SAEConfig, params: Params, z_BxM: jax.Array) -> jax.Array:
  """Reconstruction `x̂`, shape `(batch, d_in)`."""
  return get(cfg).decode(cfg, params, z_BxM)


def decoder_matrix(cfg: SAEConfig, params: Params) -> jax.Array:
  """`W_dec` of shape `(d_sae, d_in)` (the tied SAE's is `W_encᵀ`)."""
  return get(cfg).decoder_matrix(cfg, params)


def forward(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(z, x̂)` for a batch."""
  z = encode(cfg, params, x_BxD)
  return z, decode(cfg, params, z)


def sae_loss(
  cfg: SAEConfig,
  params: Params,
  x_BxD: jax.Array,
  *,
  gamma=None,
  dead_M=None,
  hp: Mapping[str, Any] | None = None,
) -> tuple[jax.Array, dict]:
  """The training loss of `cfg`'s architecture: `(scalar, aux_metrics)` (see `Architecture.loss`).

  `gamma`: per-input-dimension weights (None: the plain SAE). `dead_M`: mask of dead latents for
  architectures with AuxK (None: no AuxK term). `hp`: hyperparameter overrides, e.g.
  `{"k": 8}`; a name the architecture does not sweep is refused.
  """
  arch = get(cfg)
  hp = dict(hp or {})
  unknown = set(hp) - {h.name for h in arch.hyperparameters}
  if unknown:
    raise V.WSAEInputError(
      f"{arch.name} SAEs take the hyperparameters {[h.name for h in arch.hyperparameters]}, "
      f"not {sorted(unknown)}."
    )
  return arch.loss(cfg, params, x_BxD, gamma=gamma, dead_M=dead_M, hp=hp)


def with_hyperparameters(cfg: SAEConfig, values: Mapping[str, Any]) -> SAEConfig:
  """`cfg` with a sweep member's hyperparameter values (concrete), e.g. to evaluate the member."""
  names = {h.name for h in get(cfg).hyperparameters}
  return dataclasses.replace(cfg, **{k: v for k, v in values.items() if k in names})


def num_params(params: Params) -> int:
  return sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))


# ------------------------------------------------------------------------------------------------
# Pieces several architectures share.
# ------------------------------------------------------------------------------------------------


def unit_rows(key, shape, dtype) -> jax.Array:
  """Random rows of unit norm."""
  w = jax.random.normal(key, shape, jnp.float32)
  return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)).astype(dtype)


def untied_init(cfg: SAEConfig, key, *, decoder_norm: float = 1.0) -> Params:
  """Decoder rows random with norm `decoder_norm`, `W_enc = W_decᵀ`, zero biases."""
  dtype = jnp.dtype(cfg.dtype)
  w_dec = unit_rows(key, (cfg.d_sae, cfg.d_in), dtype) * jnp.asarray(decoder_norm, dtype)
  return {
    "W_enc": w_dec.T,
    "W_dec": w_dec,
    "b_enc": jnp.zeros((cfg.d_sae,), dtype),
    "b_dec": jnp.zeros((cfg.d_in,), dtype),
  }


def affine_decode(cfg, params, z_BxM):
  return z_BxM @ params["W_dec"] + params["b_dec"]


def w_dec(cfg, params):
  return params["W_dec"]


def untied_tensors(params, names=("W_enc", "W_dec", "b_enc", "b_dec")) -> dict[str, np.ndarray]:
  """The named parameters as contiguous float32 arrays (what a SAELens folder stores)."""
  return {k: np.ascontiguousarray(np.asarray(params[k], np.float32)) for k in names}


def b_dec_folded_into_b_enc(c: Mapping, tensors: Mapping) -> dict[str, np.ndarray]:
  """The four untied tensors for an encoder that does not subtract b_dec at its input: a SAELens
  folder with `apply_b_dec_to_input` (its default) is converted exactly,
  `b_enc' = b_enc − b_dec W_enc`."""
  p = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  p.setdefault("b_enc", np.zeros(p["W_enc"].shape[1], np.float32))
  if c.get("apply_b_dec_to_input", True):
    p["b_enc"] = p["b_enc"] - p["b_dec"] @ p["W_enc"]
  return p


def b_dec_unfolded_from_b_enc(c: Mapping, tensors: Mapping) -> dict[str, np.ndarray]:
  """The converse of `b_dec_folded_into_b_enc`, for an encoder that subtracts b_dec at its input
  (Top-k): a SAELens folder without `apply_b_dec_to_input` is converted exactly,
  `b_enc' = b_enc + b_dec W_enc`, so `(x − b_dec) W_enc + b_enc' = x W_enc + b_enc`."""
  p = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  p.setdefault("b_enc", np.zeros(p["W_enc"].shape[1], np.float32))
  if not c.get("apply_b_dec_to_input", True):
    p["b_enc"] = (
      p["b_enc"].astype(np.float64) + p["b_dec"].astype(np.float64) @ p["W_enc"].astype(np.float64)
    ).astype(np.float32)
  return p


def saved_fields(ours: Mapping, name: str, *, drop=("d_in", "d_sae")) -> dict:
  """Our config's training fields saved in a SAELens folder, when it was written for `name`."""
  if ours.get("architecture") != name:
    return {}
  return {k: v for k, v in ours.items() if k not in drop and k != "architecture"}


def check_nonnegative(name: str):
  return lambda cfg, v: V.check_range(name, v, low=0.0)

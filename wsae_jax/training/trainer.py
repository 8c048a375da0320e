"""The trainer: one jitted, donated `train_step(state, x_BxD, gamma) -> (state, metrics)` and the
loop `train` around it.

Parameters are created already replicated over a `Mesh(("data",))`; each batch is split over the
mesh's devices. A step whose loss or gradient is not finite is not applied: the state is frozen at
the last finite one and `diverged_at` records the step, so `train` can stop and return it.
Training does not evaluate: `train` returns the state and the history of training metrics;
`wsae_jax.evaluation` scores trained SAEs.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from wsae_jax import _validate as V
from wsae_jax import models, parallel
from wsae_jax.data import sources as data_lib
from wsae_jax.objectives import weights
from wsae_jax.training import data_init, optim, preemption
from wsae_jax.training import run as run_lib
from wsae_jax.training.config import TrainConfig, resolve_run_defaults
from wsae_jax.training.state import TrainState, init_state, new_state


def where_tree(pred, new, old):
  """`new` where `pred`, else `old`, leaf by leaf."""
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def apply_step(
  sae_cfg,
  opt: optax.GradientTransformation,
  state: TrainState,
  x_BxD,
  gamma_D,
  *,
  batch_size: int,
  hp: Mapping[str, Any] | None = None,
  reduce: Callable[[Any], Any] = lambda t: t,
  vary: Callable[[Any], Any] = lambda p: p,
  aux: bool = True,
  compute_dtype: str = "float32",
) -> tuple[TrainState, dict]:
  """One optimiser step of one SAE: the maths shared by `train` and `sweep.train_sweep`.

  `hp`: hyperparameter overrides passed to the loss (one value per sweep member). `reduce`
  combines the per-device loss, metrics and fired-latent counts when the batch is split by hand
  (`shard_map`); under `jax.jit` sharding it is the identity. A step whose loss or gradient is not
  finite is not applied, and `diverged_at` records it (the member is frozen from then on).
  `vary` casts the parameters inside the differentiated function to vary over the batch's
  `shard_map` axes (the sweep's "data"): a custom VJP (the Top-k sparse path) must see its inputs
  vary alike, and the transpose of the cast sums the per-device gradients. `aux=False` leaves out
  the dead-latent (AuxK) term: a caller that knows no latent is dead (the sweep, for a whole chunk
  of members) skips its cost. `compute_dtype` (see
  `TrainConfig.compute_dtype`): the dtype the parameters and inputs are cast to inside the loss;
  the gradient comes back in the parameters' float32.
  """
  arch = models.get(sae_cfg)
  dead_M = (
    state.tokens_since_fired >= sae_cfg.dead_after_tokens
    if arch.uses_dead_latents and aux
    else None
  )

  cast = (
    (lambda a: a)
    if compute_dtype == "float32"
    else (lambda a: a.astype(compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a)
  )

  def loss_fn(p):
    loss, metrics = models.sae_loss(
      sae_cfg, jax.tree.map(cast, vary(p)), cast(x_BxD), gamma=gamma_D, dead_M=dead_M, hp=hp
    )
    metrics = {k: (v.astype(jnp.float32) if k != "fired" else v) for k, v in metrics.items()}
    fired = metrics.pop("fired").astype(jnp.int32)
    # Reducing inside the differentiated function makes the gradient that of the global loss:
    # under shard_map the transpose of the reduction sums the per-device contributions.
    loss, metrics, fired = reduce((loss, metrics, fired))
    return loss, (metrics, fired)

  (loss, (metrics, fired)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = opt.update(grads, state.opt_state, state.params)
  params = arch.post_update(sae_cfg, optax.apply_updates(state.params, updates), metrics)
  tsf = jnp.where(fired > 0, 0, state.tokens_since_fired + batch_size)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (state.diverged_at < 0)
  new = TrainState(
    step=state.step + 1,
    params=params,
    opt_state=opt_state,
    tokens_since_fired=tsf,
    diverged_at=state.diverged_at,
  )
  frozen = state.replace(  # type: ignore[attr-defined]  # a flax struct dataclass
    diverged_at=jnp.where(state.diverged_at < 0, state.step, state.diverged_at)
  )
  return where_tree(ok, new, frozen), {**metrics, "grad_norm": grad_norm}


def make_train_step(
  sae_cfg, train_cfg: TrainConfig, *, mesh: Mesh | None = None
) -> Callable[[TrainState, jax.Array, jax.Array | None], tuple[TrainState, dict]]:
  """Builds the jitted step `(state, x_BxD, gamma) -> (state, metrics)`; `state` is donated.
  Unset run-relative defaults of `sae_cfg` (the AuxK window) are resolved as `train` does."""
  sae_cfg = resolve_run_defaults(sae_cfg, train_cfg)
  mesh = mesh or parallel.data_mesh()
  parallel.check_latent_shards(sae_cfg.d_sae, mesh)
  opt = optim.make_optimizer(sae_cfg, train_cfg)
  repl, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  shardings = parallel.state_shardings(mesh, jax.eval_shape(lambda: new_state(sae_cfg, train_cfg)))

  def step_fn(state: TrainState, x_BxD, gamma_D):
    # The mesh in effect while tracing: `models.latent_shards` writes the selection across
    # latent shards out per shard (a no-op on a mesh without a "latent" axis).
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return apply_step(
        sae_cfg,
        opt,
        state,
        x_BxD,
        gamma_D,
        batch_size=x_BxD.shape[0],
        compute_dtype=train_cfg.compute_dtype,
      )

  return jax.jit(
    step_fn,
    in_shardings=(shardings, batch, repl),
    out_shardings=(shardings, repl),
    donate_argnums=0,
  )


def to_host(tree):
  """Copies a pytree of (possibly multi-process, replicated) arrays to numpy on this host."""

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      if not a.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
      return np.asarray(a.addressable_data(0))
    return np.asarray(a)

  return jax.tree.map(one, tree)


@dataclasses.dataclass
class History:
  """Metrics recorded every `log_every` steps, and how the run ended."""

  records: list[dict] = dataclasses.field(default_factory=list)
  diverged_at: int | None = None
  seconds: float = 0.0

  def column(self, name: str) -> np.ndarray:
    return np.asarray([r[name] for r in self.records])

  def last(self) -> dict:
    return self.records[-1] if self.records else {}


def check_params(sae_cfg, params) -> None:
  """Refuses parameters whose names or shapes do not fit `sae_cfg`."""
  expected = jax.eval_shape(lambda: models.init(sae_cfg, jax.random.key(0)))
  got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), params)
  if jax.tree.structure(expected) != jax.tree.structure(got) or any(  # type: ignore[operator]
    e.shape != g.shape for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got))
  ):
    raise V.WSAEInputError(
      f"params do not fit the {sae_cfg.architecture} config: expected "
      f"{ {k: v.shape for k, v in expected.items()} }, got { {k: v.shape for k, v in got.items()} }."
    )


def _check_inputs(sae_cfg, train_cfg, source, mesh, params) -> None:
  if source.d_in != sae_cfg.d_in:
    raise V.WSAEInputError(
      f"data has d_in={source.d_in} but the SAE config has d_in={sae_cfg.d_in}; they must match."
    )
  if source.batch_size != train_cfg.batch_size:
    raise V.WSAEInputError(
      f"data yields batches of {source.batch_size} but train_cfg.batch_size is "
      f"{train_cfg.batch_size}; make them equal."
    )
  parallel.check_batch_divisible(train_cfg.batch_size, mesh)
  parallel.check_latent_shards(sae_cfg.d_sae, mesh)
  if params is not None:
    check_params(sae_cfg, params)


INIT_SAMPLE_ROWS = 16384
"""Rows (the first training batches) from which `b_dec_init` estimates the decoder bias."""


def initial_sample(source, rows: int = INIT_SAMPLE_ROWS) -> np.ndarray:
  """The first training batches of `source`, about `rows` rows, on the host."""
  if not data_lib.resumable(source):
    raise V.WSAEInputError(
      "b_dec_init from data needs a source that can be read again from its start (an array, "
      "a SyntheticSource or an ActivationStore), not an iterable of batches."
    )
  steps = max(1, -(-rows // source.batch_size))
  return np.concatenate([np.asarray(source.batch(t)) for t in range(steps)])


def data_b_dec(sae_cfg, train_cfg: TrainConfig, source):
  """`b_dec` from the first training rows of `source` (`train_cfg.b_dec_init`), or None when the
  plain initialisation applies (zeros, or an architecture without a decoder bias)."""
  how = train_cfg.b_dec_init
  if how == "auto":
    how = "median" if data_lib.resumable(source) else "zeros"
  if how == "zeros" or "b_dec" not in jax.eval_shape(
    lambda: models.init(sae_cfg, jax.random.key(0))
  ):
    return None
  return data_init.b_dec_init(initial_sample(source), how)


def initial_params(sae_cfg, seed: int, b_dec) -> dict:
  """Parameters initialised from `seed`, with `b_dec` (from `data_b_dec`) in place."""
  return data_init.with_b_dec(jax.device_get(models.init(sae_cfg, jax.random.key(seed))), b_dec)


def run_record(
  sae_cfg, train_cfg, gamma, source, *, normalization_scale=None, standardization=None, mesh=None
) -> dict:
  """The record of a `train` run (checkpoints, `wsae train`'s run.json): `run.run_meta` with the
  source's identity, γ (fixed or a `DecoderGamma` schedule) and the mesh it trains on."""
  schedule = weights.schedule_of(gamma)
  return run_lib.run_meta(
    sae_cfg,
    train_cfg,
    gamma=None if schedule else gamma,
    data=data_lib.describe(source),
    scale=normalization_scale,
    standardization=standardization,
    gamma_schedule=schedule.describe() if schedule else None,
    mesh=None if mesh is None else parallel.describe(mesh),
  )


def _record(metrics, state, step, window) -> tuple[dict, int]:
  """The history record of `step` (host floats) and the divergence step (-1 if none)."""
  rec, diverged, tsf = to_host((metrics, state.diverged_at, state.tokens_since_fired))
  rec = {k: float(v) for k, v in rec.items()}
  rec["step"] = step
  rec["dead_frac"] = float(np.mean(tsf >= window))
  return rec, int(diverged)


def train(
  sae_cfg,
  train_cfg: TrainConfig,
  data,
  *,
  gamma=None,
  params: dict | None = None,
  mesh: Mesh | None = None,
  progress: bool | str = True,
  state: TrainState | None = None,
  checkpointer=None,
  resume: bool = False,
  normalization_scale: float | None = None,
  standardization: dict | None = None,
  on_record: Callable[[dict], Any] | None = None,
) -> tuple[TrainState, History]:
  """Trains one SAE and returns `(final_state, history)`.

  Args:
    sae_cfg: an SAE config (any registered architecture, e.g. `TopKSAEConfig`).
    train_cfg: a `TrainConfig`.
    data: a batch source (`SyntheticSource`, `ArraySource`, …), a `(tokens, d_in)` array, or an
      iterable of `(batch, d_in)` arrays.
    gamma: per-input-dimension weights, shape `(d_in,)`, > 0 (None: the plain SAE), or a
      `weights.DecoderGamma` that re-estimates γ from the decoder every few steps.
    params: initial parameters (default: `models.init` with `train_cfg.seed`, and `b_dec` from
      the first training rows when `train_cfg.b_dec_init` says so).
    mesh: device mesh with a "data" axis (default: all devices).
    progress: show a progress bar (a string is used as its description).
    state: a `TrainState` to continue from (its `step` is where training resumes).
    checkpointer: a `storage.checkpoint.Checkpointer`; the state is saved every
      `checkpointer.every` steps and at the end.
    resume: continue from the newest complete checkpoint of `checkpointer` (if any). Because each
      batch is a function of `(seed, step)`, a resumed run ends with the same parameters as an
      uninterrupted one.
    normalization_scale: recorded in checkpoints (activations were multiplied by it).
    standardization: recorded in checkpoints (`{"mean", "std"}`: activations were standardized).
    on_record: called with each history record as it is made (every `log_every` steps), e.g. to
      write it to TensorBoard or W&B.

  If a step produces a non-finite loss or gradient, training stops at the next record, warns with
  the step number, and returns the last finite state with `history.diverged_at` set.

  On SIGTERM or SIGINT (Ctrl-C) the step in flight finishes, the checkpointer (if any) saves that
  step, and `preemption.Interrupted` is raised carrying the step, the state and the history; the
  previous signal handlers are restored (`training.preemption`). `resume=True` then continues
  exactly where it stopped.
  """
  # Over 80 lines with its docstring (every argument documented); the code is ~60 lines.
  mesh = mesh or parallel.data_mesh()
  run = _start(
    sae_cfg,
    train_cfg,
    data,
    gamma,
    params,
    state,
    mesh,
    checkpointer,
    resume,
    normalization_scale=normalization_scale,
    standardization=standardization,
  )
  sae_cfg, source, schedule, gamma, state = (
    run.sae_cfg,
    run.source,
    run.schedule,
    run.gamma,
    run.state,
  )
  step_fn = make_train_step(sae_cfg, train_cfg, mesh=mesh)
  batch_sharding = parallel.batch_sharded(mesh)
  start = int(to_host(state.step))
  history = History()
  t0 = time.perf_counter()
  bar = progress_bar(progress, train_cfg.steps, start, sae_cfg.architecture)
  window = train_cfg.log_every * train_cfg.batch_size
  serialize = parallel.serialize_collectives(mesh)
  with preemption.deferred() as stop:
    try:
      for step in range(start, train_cfg.steps):
        state, metrics = step_fn(state, source.batch(step, batch_sharding), gamma)
        if serialize:
          jax.block_until_ready(state)
        last = step + 1 == train_cfg.steps
        if (step + 1) % train_cfg.log_every == 0 or last:
          rec, diverged = _record(metrics, state, step + 1, window)
          if diverged >= 0:
            history.diverged_at = diverged
            _warn_diverged(bar, diverged)
            break
          history.records.append(rec)
          if on_record is not None:
            on_record(rec)
          bar.set_postfix(loss=f"{rec['loss']:.4g}", l0=f"{rec['l0']:.1f}", refresh=False)
          bar.update(step + 1 - bar.n)
        if schedule and (step + 1) % schedule.every == 0:
          gamma = _next_gamma(schedule, sae_cfg, train_cfg, state, mesh)
        interrupted = not last and stop.agreed()
        due = checkpoint_due(checkpointer, step, step + 1, last)
        if checkpointer is not None and (interrupted or due):
          jax.block_until_ready(state)  # orbax's device work must not overlap a running step
          extra = {"gamma_current": np.asarray(gamma).tolist()} if schedule else {}
          checkpointer.save(step + 1, state, {**run.meta, **extra})
        if interrupted:
          history.seconds = time.perf_counter() - t0
          saved = checkpointer is not None
          raise stop.interruption(step + 1, saved=saved, state=state, history=history)
    finally:
      bar.close()
  jax.block_until_ready(state)
  history.seconds = time.perf_counter() - t0
  return state, history


@dataclasses.dataclass
class _Run:
  """Where `train` starts: the resolved config, the batch source, γ (and its schedule), the
  state (fresh or restored) and the run's record."""

  sae_cfg: Any
  source: Any
  schedule: weights.GammaSchedule | None
  gamma: Any
  state: TrainState
  meta: dict


def _start(
  sae_cfg,
  train_cfg,
  data,
  gamma,
  params,
  state,
  mesh,
  checkpointer,
  resume,
  *,
  normalization_scale,
  standardization,
) -> _Run:
  """Validation, γ, initial state and resume-or-start: everything before the first step."""
  sae_cfg = resolve_run_defaults(sae_cfg, train_cfg)
  source = data_lib.as_source(data, train_cfg.batch_size, seed=train_cfg.seed)
  _check_inputs(sae_cfg, train_cfg, source, mesh, params)
  schedule = weights.schedule_of(gamma)
  gamma = weights.as_gamma(schedule.initial(sae_cfg.d_in) if schedule else gamma, sae_cfg.d_in)
  if state is None and params is None:
    b_dec = data_b_dec(sae_cfg, train_cfg, source)
    if b_dec is not None:
      params = initial_params(sae_cfg, train_cfg.seed, b_dec)
  state = state if state is not None else init_state(sae_cfg, train_cfg, mesh=mesh, params=params)
  meta = run_record(
    sae_cfg,
    train_cfg,
    schedule or gamma,
    source,
    normalization_scale=normalization_scale,
    standardization=standardization,
    mesh=mesh,
  )
  restored = run_lib.resume_or_start(checkpointer, state, meta, resume=resume)
  if restored is not None:
    if not data_lib.resumable(source):
      raise V.WSAEInputError(
        "cannot resume from an iterable of batches (it cannot be rewound to the checkpoint's "
        "step); pass an array or a SyntheticSource."
      )
    state = restored[0]
    if schedule:  # the γ in effect when the checkpoint was written
      gamma = jnp.asarray(restored[1]["gamma_current"], jnp.float32)
  if gamma is not None:
    gamma = jax.device_put(gamma, parallel.replicated(mesh))
  return _Run(sae_cfg, source, schedule, gamma, state, meta)


def _next_gamma(schedule, sae_cfg, train_cfg, state, mesh):
  """γ re-estimated from the decoder (`weights.DecoderGamma`)."""
  w_dec, tsf = to_host((models.decoder_matrix(sae_cfg, state.params), state.tokens_since_fired))
  new = schedule.update(w_dec, tsf, schedule.every * train_cfg.batch_size)
  return jax.device_put(new, parallel.replicated(mesh))


def _warn_diverged(bar, step: int) -> None:
  msg = (
    f"training stopped: the loss or gradient became non-finite at step {step}; "
    f"returning the last finite state (step {step}). Lower the learning "
    f"rate, check the data for NaN/inf, or enable grad_clip."
  )
  bar.write(msg)
  warnings.warn(msg, RuntimeWarning, stacklevel=3)


# Pieces `train` and `sweep.train_sweep` share.


def progress_bar(progress: bool | str, total: int, initial: int, default: str):
  """The run's progress bar (`progress`: False hides it, a string names it)."""
  return tqdm(
    total=total,
    initial=initial,
    disable=not progress,
    dynamic_ncols=True,
    desc=progress if isinstance(progress, str) else default,
    leave=False,
  )


def checkpoint_due(checkpointer, before: int, after: int, last: bool) -> bool:
  """Whether a checkpoint is written once the run has gone from step `before` to `after`: a
  multiple of `checkpointer.every` was crossed, `checkpointer.every_minutes` have passed since its
  last save (or its start), or the run ended."""
  if checkpointer is None:
    return False
  return (
    last or after // checkpointer.every > before // checkpointer.every or checkpointer.time_due()
  )

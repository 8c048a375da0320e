"""Hyperparameter sweeps as one compiled program: E SAEs stacked on a leading "member" axis.

Each member has its own initialisation seed, learning rate, weighting (α or an explicit γ), its
architecture's hyperparameters (relu: l1_coefficient; topk: k, by masking ranks up to the config's
k; jumprelu: l0_coefficient; batchtopk: k) and, for synthetic data, its own data stream (data seed
and sparsity S). Members that read the same stream share its batches; the uniforms behind a data
seed are drawn once and serve every sparsity (common random numbers, the same law as
`SyntheticSource`, so a member sees exactly the batches `train` would give it).

Layout of the computation (chosen after profiling on a 2-core CPU, see benchmarks/RESULTS.md):
one call runs `steps_per_call` steps; the batches of those steps are generated first, then the
members are processed in chunks (`lax.map`), each chunk running all the steps (`lax.scan`) while its
parameters stay in cache. The member axis is sharded over a `Mesh(("member", "data"))` with
`jax.shard_map`; the batch may also be split over "data", with gradients combined by `psum`, or
(not both) each member's latents over a "latent" axis that the `shard_map` leaves to the
partitioner and to `models.latent_shards` (dictionaries too big for one device).

A member whose loss or gradient turns non-finite is frozen at its last finite state and reported;
the others carry on. Training does not evaluate: `evaluation.scoring.score_sweep` scores a result.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wsae_jax import _validate as V
from wsae_jax import models, parallel
from wsae_jax.data import sources as data_lib
from wsae_jax.data import superposition as sp
from wsae_jax.data.problems import HELD_OUT_STEP, SyntheticProblem
from wsae_jax.objectives import weights as weights_lib
from wsae_jax.parallel import DATA_AXIS
from wsae_jax.training import gamma as gamma_lib
from wsae_jax.training import optim, preemption, trainer
from wsae_jax.training import run as run_lib
from wsae_jax.training.config import TrainConfig, resolve_run_defaults
from wsae_jax.training.state import TrainState, new_state

MEMBER_AXIS = "member"
BASE_KEYS = ("seed", "data_seed", "sparsity", "alpha", "gamma_kind", "gamma", "learning_rate")
"""What every member may set; each architecture adds its own hyperparameters."""


def member_keys(sae_cfg=None) -> tuple[str, ...]:
  """The keys a member may set: `BASE_KEYS` and the hyperparameters of `sae_cfg`'s architecture
  (of every registered architecture when `sae_cfg` is None)."""
  archs = models.ARCHITECTURES.values() if sae_cfg is None else [models.get(sae_cfg)]
  return BASE_KEYS + tuple(dict.fromkeys(h.name for a in archs for h in a.hyperparameters))


def grid(**axes: Sequence[Any]) -> list[dict]:
  """The Cartesian product of named axes, as member dicts.

  >>> grid(seed=[0, 1], alpha=[0.0, 1.0])[:2]
  [{'seed': 0, 'alpha': 0.0}, {'seed': 0, 'alpha': 1.0}]
  """
  for name in axes:
    if name not in member_keys():
      raise V.WSAEInputError(f"unknown sweep axis {name!r}; choose from {member_keys()}.")
  names = list(axes)
  return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


# ----------------------------------------------------------------------------------------------
# Members: validate and resolve every hyperparameter before any work.
# ----------------------------------------------------------------------------------------------


def resolve_members(sae_cfg, train_cfg, members, *, synthetic: bool) -> list[dict]:
  """Every member with all its keys filled in (defaults from the configs), each value checked.

  Raises `WSAEInputError` naming the member and the key for anything the sweep cannot run.
  """
  if not members:
    raise V.WSAEInputError("a sweep needs at least one member.")
  arch = models.get(sae_cfg)
  allowed = member_keys(sae_cfg)
  out = []
  for i, m in enumerate(members):
    where = f"member {i}: "
    unknown = set(m) - set(allowed)
    if unknown:
      others = sorted(unknown & set(member_keys()))
      hint = (
        (
          f" ({', '.join(others)} only appl{'ies' if len(others) == 1 else 'y'} to other "
          f"architectures; {arch.name} SAEs sweep "
          f"{[h.name for h in arch.hyperparameters] or 'none'})"
        )
        if others
        else ""
      )
      raise V.WSAEInputError(f"{where}unknown keys {sorted(unknown)}{hint}; allowed: {allowed}.")
    r = {
      "seed": m.get("seed", train_cfg.seed),
      "data_seed": m.get("data_seed", 0),
      "sparsity": m.get("sparsity"),
      "alpha": m.get("alpha"),
      "gamma_kind": m.get("gamma_kind", "variance"),
      "gamma": m.get("gamma"),
      "learning_rate": m.get("learning_rate", train_cfg.learning_rate),
      **{h.name: m.get(h.name, getattr(sae_cfg, h.name)) for h in arch.hyperparameters},
    }
    try:
      V.check_int("seed", r["seed"], low=0)
      V.check_int("data_seed", r["data_seed"], low=0)
      V.check_range("learning_rate", r["learning_rate"], low=0.0, low_open=True)
      if synthetic:
        if r["sparsity"] is None:
          raise V.WSAEInputError("sparsity is required for synthetic sweeps.")
        V.check_range("sparsity", r["sparsity"], low=0.0, high=1.0, high_open=True)
      elif r["sparsity"] is not None:
        raise V.WSAEInputError(
          "sparsity only applies to a SyntheticProblem; drop it for real data."
        )
      if r["alpha"] is not None and r["gamma"] is not None:
        raise V.WSAEInputError("give alpha or gamma, not both.")
      if r["alpha"] is not None or "gamma_kind" in m:
        try:
          gamma_lib.check_kind(r["gamma_kind"], r["alpha"], synthetic=synthetic)
        except V.WSAEInputError as e:
          raise V.WSAEInputError(f"gamma_kind: {e}") from None
      if r["gamma"] is not None:
        V.check_gamma(np.asarray(r["gamma"], np.float32), sae_cfg.d_in)
      for h in arch.hyperparameters:
        h.check(sae_cfg, r[h.name])
    except V.WSAEInputError as e:
      raise V.WSAEInputError(where + str(e)) from None
    out.append(r)
  return out


def member_gammas(members, sae_cfg, problem, source, num_samples=8192) -> np.ndarray:
  """γ per member: explicit, of its `gamma_kind` with its α (from a held-out sample of the
  member's own data, or for "oracle" from W_p's participation ratios), or ones."""
  cache: dict = {}

  def sample(m):
    key = (m["data_seed"], m["sparsity"])
    if key not in cache:
      if problem is not None:
        cache[key] = np.asarray(
          problem.source(m["sparsity"], m["data_seed"]).sample(HELD_OUT_STEP, num_samples)[1]
        )
      else:
        steps = max(1, num_samples // source.batch_size)
        cache[key] = np.concatenate([np.asarray(source.batch(t)) for t in range(steps)])
    return cache[key]

  gam = np.ones((len(members), sae_cfg.d_in), np.float32)
  for i, m in enumerate(members):
    if m["gamma"] is not None:
      gam[i] = np.asarray(m["gamma"], np.float32)
    elif m["alpha"] is not None:
      g = gamma_lib.kind_of(m.get("gamma_kind", "variance")).make(
        m["alpha"],
        sample=lambda m=m: sample(m),  # drawn only by the kinds made from a sample
        W_p=None if problem is None else problem.W_p,
        d_in=sae_cfg.d_in,
      )
      schedule = weights_lib.schedule_of(g)
      # A re-estimated γ starts at its initial value (the plain SAE for the decoder's).
      gam[i] = schedule.initial(sae_cfg.d_in) if schedule else g
  return gam


# ----------------------------------------------------------------------------------------------
# The compiled sweep.
# ----------------------------------------------------------------------------------------------


def sweep_mesh(
  num_members: int, devices=None, data_parallel: int = 1, latent_shards: int = 1
) -> Mesh:
  """A `("member", "data")` mesh: `data_parallel` devices split each batch, the rest split members.
  With `latent_shards` > 1, a `("member", "data", "latent")` mesh whose every member's latents
  are split over that many devices (members x data x latent devices).

  The member axis gets the largest device count that divides `num_members`.
  """
  devices = list(jax.devices() if devices is None else devices)
  V.check_int("data_parallel", data_parallel, low=1)
  V.check_int("latent_shards", latent_shards, low=1)
  inner = data_parallel * latent_shards
  if len(devices) % inner:
    raise V.WSAEInputError(
      f"data_parallel x latent_shards = {data_parallel} x {latent_shards} must divide the "
      f"{len(devices)} devices."
    )
  member = math.gcd(num_members, len(devices) // inner)
  used = np.asarray(devices[: member * inner])
  if latent_shards == 1:
    return Mesh(used.reshape(member, data_parallel), (MEMBER_AXIS, DATA_AXIS))
  shape = (member, data_parallel, latent_shards)
  return Mesh(used.reshape(shape), (MEMBER_AXIS, DATA_AXIS, parallel.LATENT_AXIS))


def _largest_divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _chunk_size(num_members: int, mesh: Mesh, member_chunk: int) -> int:
  """Members processed together on a device: the largest divisor of the local count <= cap."""
  return _largest_divisor_at_most(num_members // mesh.shape[MEMBER_AXIS], member_chunk)


@dataclasses.dataclass(frozen=True)
class _Streams:
  """The distinct synthetic data streams of a sweep: members with the same (data seed, sparsity)
  share one. The uniforms behind a data seed are drawn once and serve every sparsity."""

  W_p: jax.Array
  magnitude: sp.Magnitude
  seeds_R: jax.Array
  stream_seed_idx: jax.Array
  stream_sparsity: jax.Array
  rates: jax.Array | None
  prng_impl: str

  @classmethod
  def plan(cls, problem, res) -> tuple[_Streams, np.ndarray]:
    """The streams of `problem` the members `res` read, and each member's stream index."""
    seeds = sorted({m["data_seed"] for m in res})
    streams = sorted({(m["data_seed"], float(m["sparsity"])) for m in res})
    stream_of = np.asarray([streams.index((m["data_seed"], float(m["sparsity"]))) for m in res])
    return cls(
      W_p=jnp.asarray(problem.W_p, jnp.float32),
      magnitude=problem.magnitude,
      seeds_R=jnp.asarray(seeds, jnp.uint32),
      stream_seed_idx=jnp.asarray([seeds.index(s) for s, _ in streams]),
      stream_sparsity=jnp.asarray([s for _, s in streams], jnp.float32),
      rates=None if problem.rates is None else jnp.asarray(problem.rates, jnp.float32),
      prng_impl=problem.prng_impl,
    ), stream_of

  def generate(self, step0, steps: int, batch_size: int):
    """`(U, T, B, n_p)` batches of each stream for steps `step0 … step0 + T − 1` (the law of
    `SyntheticSource`, so a member sees exactly the batches `train` would give it)."""
    n = self.W_p.shape[1]
    ts = step0 + jnp.arange(steps)

    def uniforms(seed):
      key = jax.random.key(seed, impl=self.prng_impl)
      return jax.vmap(
        lambda t: jax.random.uniform(jax.random.fold_in(key, t), (batch_size, n), jnp.float32)
      )(ts)

    u_UxTxBxN = jax.vmap(uniforms)(self.seeds_R)[self.stream_seed_idx]
    sparsity = sp.feature_sparsity(self.stream_sparsity[:, None, None, None], self.rates)
    return sp.features_from_uniform(u_UxTxBxN, sparsity, self.magnitude) @ self.W_p.T


def _build_call(
  sae_cfg, train_cfg, *, num_members, steps_per_call, member_chunk, mesh, streams, shared_chunks
):
  """Returns jit((states, hp, xs_or_none, step0) -> (states, last_metrics)), with `.compiles()`
  the number of programs it has traced (one per distinct input layout).

  `streams`: the synthetic `_Streams` generated inside the program (None: real batches are
  passed as `xs`). `shared_chunks`: every chunk's members read one stream, so a chunk's batch is
  passed to its members unbatched and the vmapped encoder products of the chunk become one GEMM,
  `(B, d_in) @ (d_in, chunk·d_sae)`, instead of `chunk` small ones.
  """
  # Over 80 lines on purpose: the nested functions are one shard_map program (device, chunk,
  # member, step) and read best together; each level is a few lines.
  n_member = mesh.shape[MEMBER_AXIS]
  local = num_members // n_member
  chunk = _chunk_size(num_members, mesh, member_chunk)
  total_steps = train_cfg.steps
  B = train_cfg.batch_size
  arch = models.get(sae_cfg)
  hp_names = [h.name for h in arch.hyperparameters]
  traces = [0]

  # With latent shards the "latent" axis is left to the partitioner inside the hand-split
  # program; XLA's partitioner then refuses sums over a hand-split axis (the batch's), so such a
  # sweep splits members only (`_check_sweep` refuses data parallelism with it).
  split_data = parallel.latent_shard_count(mesh) == 1

  def per_device(states, hp, xs, step0):
    if split_data:
      n_data = jax.lax.psum(1, DATA_AXIS)

      def reduce(t):
        loss, aux, fired = t
        mean = lambda a: jax.lax.psum(a, DATA_AXIS) / n_data
        return mean(loss), jax.tree.map(mean, aux), jax.lax.psum(fired, DATA_AXIS)

      vary = lambda p: jax.tree.map(lambda a: jax.lax.pcast(a, DATA_AXIS, to="varying"), p)
    else:
      reduce = vary = lambda t: t

    def member_step(state, hp_m, x_BxD, step, aux):
      opt = optim.make_optimizer(sae_cfg, train_cfg, learning_rate=hp_m["learning_rate"])
      new, met = trainer.apply_step(
        sae_cfg,
        opt,
        state,
        x_BxD,
        hp_m["gamma"],
        batch_size=B,
        hp={n: hp_m[n] for n in hp_names},
        reduce=reduce,
        vary=vary,
        aux=aux,
        compute_dtype=train_cfg.compute_dtype,
      )
      live = step < total_steps  # the last call may run past the end: those steps are no-ops
      return trainer.where_tree(live, new, state), met

    def run_chunk(args):
      st, h = args

      def body(st, t):
        if shared_chunks:
          x, x_axis = xs[h["stream"][0], t], None
        else:
          x, x_axis = xs[h["stream"], t], 0
        run = lambda aux: jax.vmap(functools.partial(member_step, aux=aux), (0, 0, x_axis, None))(
          st, h, x, step0 + t
        )
        if not arch.uses_dead_latents:
          return run(False)
        # Under vmap a per-member `lax.cond` runs both branches; deciding once per chunk skips
        # the AuxK term (a second top-k and product) while no member of the chunk has a dead
        # latent (measured: 1.3 of 4.3 ms per Top-k member-step at d_sae = 200).
        any_dead = jnp.any(st.tokens_since_fired >= sae_cfg.dead_after_tokens)
        return jax.lax.cond(any_dead, lambda: run(True), lambda: run(False))

      st, mets = jax.lax.scan(body, st, jnp.arange(steps_per_call))
      return st, jax.tree.map(lambda a: a[-1], mets)

    to_chunks = lambda a: a.reshape((local // chunk, chunk) + a.shape[1:])
    from_chunks = lambda a: a.reshape((local,) + a.shape[2:])
    st, met = jax.lax.map(run_chunk, (jax.tree.map(to_chunks, states), jax.tree.map(to_chunks, hp)))
    return jax.tree.map(from_chunks, st), jax.tree.map(from_chunks, met)

  member_spec = P(MEMBER_AXIS)
  xs_spec = P(None, None, DATA_AXIS) if split_data else P()

  def call(states, hp, xs, step0):
    traces[0] += 1  # Python runs at trace time only: one count per compiled program
    if xs is None:
      xs = streams.generate(step0, steps_per_call, B)
    xs = jax.lax.with_sharding_constraint(xs, NamedSharding(mesh, xs_spec))
    # Manual over members and data; a "latent" axis is left to the partitioner (and to
    # `models.latent_shards`, which writes the selection across it out per shard).
    return jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(member_spec, member_spec, xs_spec, P()),
      out_specs=(member_spec, member_spec),
      axis_names=frozenset({MEMBER_AXIS, DATA_AXIS} if split_data else {MEMBER_AXIS}),
    )(states, hp, xs, step0)

  member_sharding = NamedSharding(mesh, member_spec)
  state_sharding = parallel.state_shardings(
    mesh, jax.eval_shape(lambda: new_state(sae_cfg, train_cfg)), lead=MEMBER_AXIS
  )
  return _Call(
    jax.jit(call, out_shardings=(state_sharding, member_sharding), donate_argnums=0), traces
  )


class _Call:
  """A compiled sweep call that counts the programs it traced (JAX's cache size is private)."""

  def __init__(self, fn, traces: list[int]):
    self.fn, self.traces = fn, traces

  def __call__(self, *args):
    return self.fn(*args)

  def compiles(self) -> int:
    return self.traces[0]


def _decoder_gammas(sae_cfg, members, decoder, states, gammas, window_tokens) -> np.ndarray:
  """`gammas` with each `gamma_kind="decoder"` member's γ re-estimated from its decoder."""
  gammas = np.array(gammas)
  w_dec = jax.device_get(jax.vmap(lambda p: models.decoder_matrix(sae_cfg, p))(states.params))
  tsf = jax.device_get(states.tokens_since_fired)
  for i in decoder:
    gammas[i] = weights_lib.DecoderGamma(members[i]["alpha"]).update(
      w_dec[i], tsf[i], window_tokens
    )
  return gammas


def _data_initialised_params(sae_cfg, train_cfg, members, problem, source):
  """Stacked initial parameters with each member's `b_dec` from the first batches of its own
  stream (`train_cfg.b_dec_init`), exactly as `train` initialises that member; None when the
  plain initialisation applies."""
  b_decs, params = {}, []
  for m in members:
    key = None if problem is None else (m["data_seed"], m["sparsity"])
    if key not in b_decs:
      src = (
        source
        if problem is None
        else problem.source(m["sparsity"], m["data_seed"], train_cfg.batch_size)
      )
      b_decs[key] = trainer.data_b_dec(sae_cfg, train_cfg, src)
    if b_decs[key] is None:
      return None
    params.append(trainer.initial_params(sae_cfg, m["seed"], b_decs[key]))
  return jax.tree.map(lambda *a: np.stack(a), *params)


@dataclasses.dataclass
class SweepResult:
  """The outcome of `train_sweep`: stacked final states, resolved members, histories."""

  sae_cfg: Any
  train_cfg: TrainConfig
  members: list[dict]
  """Resolved members (every key filled in), in order."""
  gammas: np.ndarray
  """`(E, d_in)` the γ each member trained with (ones for the plain SAE)."""
  states: TrainState
  """Stacked: every leaf has a leading member axis."""
  histories: list[list[dict]]
  diverged: dict[int, int]
  """member index -> first non-finite step, for members that were frozen."""
  seconds: float
  compiles: int

  def params(self, i: int) -> dict:
    """Parameters of member i."""
    return jax.tree.map(lambda a: np.asarray(a[i]), self.states.params)

  def member_config(self, i: int):
    """The SAE config of member i (its hyperparameters set), e.g. to evaluate it."""
    return models.with_hyperparameters(self.sae_cfg, self.members[i])

  def gamma(self, i: int):
    """The γ member i trained with, or None for a plain SAE."""
    m = self.members[i]
    return None if (m["alpha"] is None and m["gamma"] is None) else self.gammas[i]


def train_sweep(
  sae_cfg,
  train_cfg: TrainConfig,
  members: Sequence[dict],
  data,
  *,
  mesh: Mesh | None = None,
  steps_per_call: int | None = None,
  member_chunk: int = 4,
  progress: bool | str = True,
  initial_params: dict | None = None,
  decoder_gamma_every: int = 100,
  checkpointer=None,
  resume: bool = False,
) -> SweepResult:
  """Trains every member of a sweep together, as one compiled program.

  Args:
    sae_cfg: the base SAE config (shapes, architecture; for topk, the largest k of the sweep).
      Its architecture's hyperparameters (`models.get(sae_cfg).hyperparameters`) may vary by
      member.
    train_cfg: the base training config (steps, batch size, schedule; default learning rate and
      seed).
    members: one dict per member with any of `BASE_KEYS` and the architecture's
      hyperparameters (see `grid`).
    data: a `SyntheticProblem` (each member draws its own stream) or real activations in any form
      `train` accepts (all members share the same batches).
    mesh: a `("member", "data")` mesh, or `("member", "data", "latent")` to split each member's
      latents (default `sweep_mesh(len(members))`).
    steps_per_call: steps run per compiled call (default `train_cfg.log_every`).
    member_chunk: members processed together within a device (cache-sized groups).
    progress: one progress bar for the whole sweep.
    initial_params: stacked starting parameters (every leaf with a leading member axis), instead
      of each member's seeded initialisation (e.g. to start from the closed form).
    checkpointer: a `checkpoint.Checkpointer`; the stacked state is saved after each compiled call
      that crosses a multiple of `checkpointer.every` steps, and at the end.
    decoder_gamma_every: steps between re-estimates of γ for members with
      `gamma_kind="decoder"` (as `weights.DecoderGamma`; a multiple of `steps_per_call`).
    resume: continue from the newest complete checkpoint (same members and configs required);
      the result equals an uninterrupted sweep, because every batch is a function of (seed, step).

  On SIGTERM or SIGINT the compiled call in flight finishes, the checkpointer (if any) saves its
  step and `preemption.Interrupted` is raised (`training.preemption`), as in `trainer.train`.

  Returns:
    A `SweepResult`: stacked states, per-member histories and the members frozen because they
    diverged. `evaluation.scoring.score_sweep` turns it into a table (L_SAE, L_GT, MMCS, L0, ...).
  """
  # Over 80 lines with its signature: the loop reads as `train`'s does; the setup before it
  # is one call per part (`_check_sweep`, `member_gammas`, `_Streams`, `_build_call`, ...).
  sae_cfg = resolve_run_defaults(sae_cfg, train_cfg)
  synthetic = isinstance(data, SyntheticProblem)
  source: Any = None if synthetic else data_lib.as_source(data, train_cfg.batch_size, seed=0)
  res = resolve_members(sae_cfg, train_cfg, list(members), synthetic=synthetic)
  E = len(res)
  mesh = mesh or sweep_mesh(E)
  T = steps_per_call or min(train_cfg.log_every, train_cfg.steps)
  _check_sweep(sae_cfg, train_cfg, data if synthetic else None, source, res, mesh, T)
  gammas = member_gammas(res, sae_cfg, data if synthetic else None, source)
  decoder = _decoder_members(res, decoder_gamma_every, T)
  streams, stream_of = _Streams.plan(data, res) if synthetic else (None, np.zeros(E, np.int64))
  C = _chunk_size(E, mesh, member_chunk)
  call = _build_call(
    sae_cfg,
    train_cfg,
    num_members=E,
    steps_per_call=T,
    member_chunk=member_chunk,
    mesh=mesh,
    streams=streams,
    # Members of a chunk reading one stream share its batch (real data: every member does).
    shared_chunks=bool(np.all(stream_of.reshape(-1, C) == stream_of.reshape(-1, C)[:, :1])),
  )
  member_sharding = NamedSharding(mesh, P(MEMBER_AXIS))
  hp = jax.device_put(_member_inputs(sae_cfg, res, gammas, stream_of), member_sharding)
  state_sharding = parallel.state_shardings(
    mesh, jax.eval_shape(lambda: new_state(sae_cfg, train_cfg)), lead=MEMBER_AXIS
  )
  states = _initial_states(
    sae_cfg, train_cfg, res, data if synthetic else None, source, initial_params, state_sharding
  )
  meta = _sweep_meta(sae_cfg, train_cfg, gammas, res, T, data if synthetic else None, source)
  states, start, histories, saved_gammas = _resume_or_start(checkpointer, states, meta, resume, E)
  if saved_gammas is not None:  # the γ in effect when the checkpoint was written
    gammas = saved_gammas
    hp = {**hp, "gamma": jax.device_put(jnp.asarray(gammas), member_sharding)}
  xs_sharding = NamedSharding(mesh, P(None, None, DATA_AXIS))
  t0 = time.perf_counter()
  bar = trainer.progress_bar(progress, train_cfg.steps, start, f"sweep x{E}")
  with preemption.deferred() as stop:
    try:
      for step0 in range(start, train_cfg.steps, T):
        xs = (
          None
          if synthetic
          else jax.device_put(_real_batches(source, step0, T, train_cfg), xs_sharding)
        )
        states, met = call(states, hp, xs, jnp.int32(step0))
        if decoder and (step0 + T) % decoder_gamma_every == 0 and step0 + T <= train_cfg.steps:
          gammas = _decoder_gammas(
            sae_cfg, res, decoder, states, gammas, decoder_gamma_every * train_cfg.batch_size
          )
          hp = {**hp, "gamma": jax.device_put(jnp.asarray(gammas), member_sharding)}
        done = min(step0 + T, train_cfg.steps)
        met, div = jax.device_get((met, states.diverged_at))
        _record_call(histories, met, div, done, bar)
        # A signal stops the sweep after the compiled call in flight: `done` is a call boundary,
        # so a resumed sweep runs the same calls as an uninterrupted one.
        interrupted = done < train_cfg.steps and stop.agreed()
        due = trainer.checkpoint_due(checkpointer, step0, done, done == train_cfg.steps)
        if checkpointer is not None and (interrupted or due):
          extra = {"gamma_current": gammas.tolist()} if decoder else {}
          checkpointer.save(done, states, {**meta, "histories": histories, **extra})
        if interrupted:
          saved = checkpointer is not None
          raise stop.interruption(done, saved=saved, state=states, history=histories)
    finally:
      bar.close()
  jax.block_until_ready(states)
  seconds = time.perf_counter() - t0
  diverged = {i: int(d) for i, d in enumerate(jax.device_get(states.diverged_at)) if d >= 0}
  return SweepResult(
    sae_cfg=sae_cfg,
    train_cfg=train_cfg,
    members=res,
    gammas=gammas,
    states=states,
    histories=histories,
    diverged=diverged,
    seconds=seconds,
    compiles=call.compiles(),
  )


def _resume_or_start(checkpointer, states, meta, resume: bool, num_members: int):
  """`(states, start step, histories, γ or None)`: from the newest complete checkpoint when
  resuming (with the γ then in effect, for decoder-γ members), else the start."""
  histories: list[list[dict]] = [[] for _ in range(num_members)]
  restored = run_lib.resume_or_start(checkpointer, states, meta, resume=resume)
  if restored is None:
    return states, 0, histories, None
  states, saved = restored
  gammas = saved.get("gamma_current")
  return (
    states,
    int(saved["step"]),
    saved.get("histories", histories),
    None if gammas is None else np.asarray(gammas, np.float32),
  )


def _record_call(histories, met, div, done: int, bar) -> None:
  """One history record per member still training (`div < 0`) after a compiled call; the
  progress bar."""
  for i, hist in enumerate(histories):
    if div[i] < 0:
      hist.append({**{k: float(v[i]) for k, v in met.items()}, "step": done})
  bar.set_postfix(
    loss=f"{np.nanmean(met['loss']):.4g}", frozen=int(np.sum(div >= 0)), refresh=False
  )
  bar.update(done - bar.n)


def _decoder_members(res, every: int, steps_per_call: int) -> list[int]:
  """The members whose γ is re-estimated from the decoder every `every` steps (between calls)."""
  decoder = [
    i
    for i, m in enumerate(res)
    if gamma_lib.kind_of(m["gamma_kind"]).re_estimated and m["alpha"] is not None
  ]
  if decoder and every % steps_per_call:
    raise V.WSAEInputError(
      f"decoder_gamma_every={every} must be a multiple of steps_per_call={steps_per_call} "
      f"(γ changes between compiled calls)."
    )
  return decoder


def _sweep_meta(sae_cfg, train_cfg, gammas, res, steps_per_call, problem, source) -> dict:
  """The sweep's run record: configs, γ, every member and the data (compared on resume)."""
  return run_lib.run_meta(
    sae_cfg,
    train_cfg,
    gamma=gammas,
    data={
      "kind": "sweep",
      "synthetic": problem is not None,
      "steps_per_call": steps_per_call,
      "members": [{k: v for k, v in m.items() if k != "gamma"} for m in res],
      "source": problem.describe() if problem is not None else data_lib.describe(source),
    },
  )


def _check_sweep(sae_cfg, train_cfg, problem, source, res, mesh, steps_per_call) -> None:
  """The sweep's inputs against each other and the mesh, before any work."""
  d_in = np.shape(problem.W_p)[0] if problem is not None else source.d_in
  if d_in != sae_cfg.d_in:
    raise V.WSAEInputError(f"data has d_in={d_in} but the SAE config has d_in={sae_cfg.d_in}.")
  if problem is None and source.batch_size != train_cfg.batch_size:
    raise V.WSAEInputError(
      f"data yields batches of {source.batch_size} but train_cfg.batch_size is "
      f"{train_cfg.batch_size}; make them equal."
    )
  if problem is not None and problem.rates is not None:
    for i, m in enumerate(res):
      try:
        sp.check_rates(problem.rates, None, m["sparsity"])
      except V.WSAEInputError as e:
        raise V.WSAEInputError(f"member {i}: {e}") from None
  E = len(res)
  parallel.check_latent_shards(sae_cfg.d_sae, mesh)
  if parallel.latent_shard_count(mesh) > 1 and mesh.shape[DATA_AXIS] > 1:
    raise V.WSAEInputError(
      f"a sweep splits either each batch (data_parallel = {mesh.shape[DATA_AXIS]}) or each "
      f"member's latents (latent_shards = {parallel.latent_shard_count(mesh)}) over devices, not "
      f"both; use sweep_mesh(E, latent_shards=...) with data_parallel=1."
    )
  if models.get(sae_cfg).batch_coupled and mesh.shape[DATA_AXIS] > 1:
    raise V.WSAEInputError(
      f"{sae_cfg.architecture} SAEs select over the whole batch, so a sweep cannot split the "
      f"batch over the mesh's {mesh.shape[DATA_AXIS]} data devices; use sweep_mesh(E) "
      f"(data_parallel=1) or train members one by one with `train`."
    )
  if E % mesh.shape[MEMBER_AXIS]:
    raise V.WSAEInputError(
      f"{E} members do not split over the mesh's {mesh.shape[MEMBER_AXIS]} member devices; use a "
      f"multiple of {mesh.shape[MEMBER_AXIS]} members or sweep_mesh({E})."
    )
  if train_cfg.batch_size % mesh.shape[DATA_AXIS]:
    raise V.WSAEInputError(
      f"batch_size {train_cfg.batch_size} must be divisible by the {mesh.shape[DATA_AXIS]} "
      f"devices of the mesh's data axis."
    )
  V.check_int("steps_per_call", steps_per_call, low=1)


def _member_inputs(sae_cfg, res, gammas, stream_of) -> dict:
  """Each member's traced inputs, stacked: learning rate, γ, stream and hyperparameters."""
  return {
    "learning_rate": jnp.asarray([m["learning_rate"] for m in res], jnp.float32),
    "gamma": jnp.asarray(gammas),
    "stream": jnp.asarray(stream_of, jnp.int32),
    **{
      h.name: jnp.asarray([m[h.name] for m in res], h.dtype)
      for h in models.get(sae_cfg).hyperparameters
    },
  }


def _initial_states(sae_cfg, train_cfg, res, problem, source, initial_params, sharding):
  """The stacked initial states: given parameters (checked), or each member's seeded init with
  `b_dec` from its data where `train_cfg.b_dec_init` says so."""
  E = len(res)
  if initial_params is not None:
    want = jax.eval_shape(lambda: models.init(sae_cfg, jax.random.key(0)))
    for name, spec in want.items():
      got = np.shape(initial_params.get(name, ()))
      if got != (E,) + spec.shape:
        raise V.WSAEInputError(
          f"initial_params[{name!r}] must have shape {(E,) + spec.shape} (members first), got {got}."
        )
  elif train_cfg.b_dec_init != "zeros":
    initial_params = _data_initialised_params(sae_cfg, train_cfg, res, problem, source)
  seeds_E = jnp.asarray([m["seed"] for m in res], jnp.uint32)
  return jax.jit(
    jax.vmap(lambda s, p: new_state(sae_cfg, train_cfg, params=p, seed=s)),
    out_shardings=sharding,
  )(seeds_E, initial_params)


def _real_batches(source, step0: int, T: int, train_cfg) -> np.ndarray:
  """`(1, T, B, d_in)`: the shared batches of steps `step0 … step0 + T − 1` (past the run's end,
  the last step's again: those steps are no-ops)."""
  last = train_cfg.steps - 1
  return np.stack([np.asarray(source.batch(min(step0 + t, last))) for t in range(T)])[None]

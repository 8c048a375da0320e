"""Hyperparameter sweeps as one compiled program: K SAEs stacked on a leading "member" axis.

Each member has its own initialisation seed, learning rate, weighting (α or an explicit γ), L1
coefficient (relu), k (topk, by masking ranks up to the config's k) and, for synthetic data, its own
data stream (data seed and sparsity S). Members that read the same stream share its batches; the
uniforms behind a data seed are drawn once and serve every sparsity (common random numbers, the
same law as `SyntheticSource`, so a member sees exactly the batches `train` would give it).

Layout of the computation (chosen after profiling on a 2-core CPU, see benchmarks/RESULTS.md):
one call runs `steps_per_call` steps; the batches of those steps are generated first, then the
members are processed in chunks (`lax.map`), each chunk running all the steps (`lax.scan`) while its
parameters stay in cache. The member axis is sharded over a `Mesh(("member", "data"))` with
`jax.shard_map`; the batch may also be split over "data", with gradients combined by `psum`.

A member whose loss or gradient turns non-finite is frozen at its last finite state and reported;
the others carry on.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import json
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from wsae_jax import _validate as V
from wsae_jax import checkpoint as ckpt
from wsae_jax import data as data_lib
from wsae_jax import losses
from wsae_jax import metrics as metrics_lib
from wsae_jax import sae as sae_lib
from wsae_jax import superposition as sp
from wsae_jax import train as train_lib
from wsae_jax import weights as weights_lib

MEMBER_AXIS, DATA_AXIS = "member", "data"
MEMBER_KEYS = ("seed", "data_seed", "sparsity", "alpha", "gamma", "learning_rate",
               "l1_coefficient", "k")
HELD_OUT_STEP = 2**30  # data step used for γ estimation and evaluation: never a training step.


@dataclasses.dataclass(frozen=True)
class SyntheticProblem:
  """Synthetic data for a sweep: every member draws from `W_p` at its own sparsity and data seed."""

  W_p: Any
  """Superposition matrix (n_p, n)."""
  magnitude: str = "uniform"
  """Law of active magnitudes (see `superposition.sample_features`)."""
  prng_impl: str = "threefry2x32"
  """PRNG of the data streams (see `data.SyntheticSource`)."""

  def __post_init__(self):
    V.check_matrix("W_p", self.W_p, shape=(None, None))
    if self.magnitude not in sp.MAGNITUDES:
      raise V.WSAEInputError(f"magnitude must be one of {sp.MAGNITUDES}, got {self.magnitude!r}.")
    if self.prng_impl not in data_lib.PRNG_IMPLS:
      raise V.WSAEInputError(f"prng_impl must be one of {data_lib.PRNG_IMPLS}, got "
                             f"{self.prng_impl!r}.")


def _describe_data(problem: SyntheticProblem) -> dict:
  """The identity of a synthetic problem (compared when a sweep resumes)."""
  import hashlib
  W = np.asarray(problem.W_p, np.float32)
  return {"kind": "synthetic", "W_p_shape": list(W.shape), "magnitude": problem.magnitude,
          "prng_impl": problem.prng_impl, "W_p_sha1": hashlib.sha1(W.tobytes()).hexdigest()}


def grid(**axes: Sequence[Any]) -> list[dict]:
  """The Cartesian product of named axes, as member dicts.

  >>> grid(seed=[0, 1], alpha=[0.0, 1.0])[:2]
  [{'seed': 0, 'alpha': 0.0}, {'seed': 0, 'alpha': 1.0}]
  """
  for name in axes:
    if name not in MEMBER_KEYS:
      raise V.WSAEInputError(f"unknown sweep axis {name!r}; choose from {MEMBER_KEYS}.")
  names = list(axes)
  return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


# ----------------------------------------------------------------------------------------------
# Members: validate and resolve every hyperparameter before any work.
# ----------------------------------------------------------------------------------------------

def _resolve_members(sae_cfg, train_cfg, members, problem, source) -> list[dict]:
  if not members:
    raise V.WSAEInputError("a sweep needs at least one member.")
  out = []
  for i, m in enumerate(members):
    unknown = set(m) - set(MEMBER_KEYS)
    if unknown:
      raise V.WSAEInputError(f"member {i} has unknown keys {sorted(unknown)}; allowed: {MEMBER_KEYS}.")
    r = {"seed": m.get("seed", train_cfg.seed), "data_seed": m.get("data_seed", 0),
         "sparsity": m.get("sparsity"), "alpha": m.get("alpha"), "gamma": m.get("gamma"),
         "learning_rate": m.get("learning_rate", train_cfg.learning_rate),
         "l1_coefficient": m.get("l1_coefficient", getattr(sae_cfg, "l1_coefficient", 0.0)),
         "k": m.get("k", getattr(sae_cfg, "k", 0))}
    where = f"member {i}: "
    try:
      V.check_int("seed", r["seed"], low=0)
      V.check_int("data_seed", r["data_seed"], low=0)
      V.check_range("learning_rate", r["learning_rate"], low=0.0, low_open=True)
      V.check_range("l1_coefficient", r["l1_coefficient"], low=0.0)
      if problem is not None:
        if r["sparsity"] is None:
          raise V.WSAEInputError("sparsity is required for synthetic sweeps.")
        V.check_range("sparsity", r["sparsity"], low=0.0, high=1.0, high_open=True)
      elif r["sparsity"] is not None:
        raise V.WSAEInputError("sparsity only applies to a SyntheticProblem; drop it for real data.")
      if r["alpha"] is not None and r["gamma"] is not None:
        raise V.WSAEInputError("give alpha or gamma, not both.")
      if r["alpha"] is not None:
        V.check_range("alpha", r["alpha"], low=0.0)
      if r["gamma"] is not None:
        V.check_gamma(np.asarray(r["gamma"], np.float32), sae_cfg.d_in)
      if isinstance(sae_cfg, sae_lib.TopKSAEConfig):
        V.check_int("k", r["k"], low=1, high=sae_cfg.k)
      elif "k" in m:
        raise V.WSAEInputError("k only applies to Top-k SAEs.")
      if "l1_coefficient" in m and not isinstance(sae_cfg, sae_lib.ReLUSAEConfig):
        raise V.WSAEInputError("l1_coefficient only applies to ReLU SAEs.")
    except V.WSAEInputError as e:
      raise V.WSAEInputError(where + str(e)) from None
    out.append(r)
  return out


def _member_gammas(members, sae_cfg, problem, source, num_samples=8192) -> np.ndarray:
  """γ per member: explicit, from α and a held-out sample of the member's own data, or ones."""
  cache = {}
  gam = np.ones((len(members), sae_cfg.d_in), np.float32)
  for i, m in enumerate(members):
    if m["gamma"] is not None:
      gam[i] = np.asarray(m["gamma"], np.float32)
    elif m["alpha"] is not None:
      key = (m["data_seed"], m["sparsity"])
      if key not in cache:
        if problem is not None:
          src = data_lib.SyntheticSource(problem.W_p, m["sparsity"], 1, seed=m["data_seed"],
                                         magnitude=problem.magnitude,
                                         prng_impl=problem.prng_impl)
          cache[key] = np.asarray(src.sample(HELD_OUT_STEP, num_samples)[1])
        else:
          steps = max(1, num_samples // source.batch_size)
          cache[key] = np.concatenate([np.asarray(source.batch(t)) for t in range(steps)])
      gam[i] = weights_lib.variance_weights(cache[key], m["alpha"])
  return gam


# ----------------------------------------------------------------------------------------------
# The compiled sweep.
# ----------------------------------------------------------------------------------------------

def sweep_mesh(num_members: int, devices=None, data_parallel: int = 1) -> Mesh:
  """A `("member", "data")` mesh: `data_parallel` devices split each batch, the rest split members.

  The member axis gets the largest device count that divides `num_members`.
  """
  devices = list(jax.devices() if devices is None else devices)
  V.check_int("data_parallel", data_parallel, low=1)
  if len(devices) % data_parallel:
    raise V.WSAEInputError(
        f"data_parallel={data_parallel} must divide the {len(devices)} devices.")
  member = math.gcd(num_members, len(devices) // data_parallel)
  used = devices[:member * data_parallel]
  return Mesh(np.asarray(used).reshape(member, data_parallel), (MEMBER_AXIS, DATA_AXIS))


def _largest_divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _chunk_size(num_members: int, mesh: Mesh, member_chunk: int) -> int:
  """Members processed together on a device: the largest divisor of the local count <= cap."""
  return _largest_divisor_at_most(num_members // mesh.shape[MEMBER_AXIS], member_chunk)


def _build_call(sae_cfg, train_cfg, *, num_members, steps_per_call, member_chunk, mesh,
                problem_n, W_p, magnitude, seeds_D, stream_seed_idx, stream_sparsity,
                shared_chunks=False, prng_impl="threefry2x32"):
  """Returns jit((states, hp, xs_or_none, step0) -> (states, last_metrics)).

  `shared_chunks`: every chunk's members read one stream, so a chunk's batch is passed to its
  members unbatched and the vmapped encoder products of the chunk become one GEMM,
  `(B, d_in) @ (d_in, chunk·d_sae)`, instead of `chunk` small ones.
  """
  n_member = mesh.shape[MEMBER_AXIS]
  local = num_members // n_member
  chunk = _chunk_size(num_members, mesh, member_chunk)
  total_steps = train_cfg.steps
  B = train_cfg.batch_size
  dead_after = getattr(sae_cfg, "dead_after_tokens", None)

  def gen_streams(step0):
    """(U, T, B, n_p) batches of each distinct (data seed, sparsity) stream, shared by members."""
    steps = step0 + jnp.arange(steps_per_call)

    def uniforms(seed):
      key = jax.random.key(seed, impl=prng_impl)
      return jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(key, t), (B, problem_n),
                                                   jnp.float32))(steps)

    u_DxTxBxN = jax.vmap(uniforms)(seeds_D)
    u_UxTxBxN = u_DxTxBxN[stream_seed_idx]
    x = sp.features_from_uniform(u_UxTxBxN, stream_sparsity[:, None, None, None], magnitude)
    return x @ W_p.T

  def per_device(states, hp, xs, step0):
    n_data = jax.lax.psum(1, DATA_AXIS)

    def reduce(t):
      loss, aux, fired = t
      mean = lambda a: jax.lax.psum(a, DATA_AXIS) / n_data
      return mean(loss), jax.tree.map(mean, aux), jax.lax.psum(fired, DATA_AXIS)

    def member_step(state, hp_m, x_BxD, step, aux):
      opt = train_lib.make_optimizer(sae_cfg, train_cfg, learning_rate=hp_m["learning_rate"])
      kw = {}
      if isinstance(sae_cfg, sae_lib.ReLUSAEConfig):
        kw["l1_coefficient"] = hp_m["l1_coefficient"]
      if isinstance(sae_cfg, sae_lib.TopKSAEConfig):
        kw["k"] = hp_m["k"]
      new, met = train_lib.apply_step(sae_cfg, opt, state, x_BxD, hp_m["gamma"], batch_size=B,
                                      loss_kwargs=kw, reduce=reduce, aux=aux)
      live = step < total_steps  # the last call may run past the end: those steps are no-ops
      return train_lib._where_tree(live, new, state), met

    def run_chunk(args):
      st, h = args

      def body(st, t):
        if shared_chunks:
          x, x_axis = xs[h["stream"][0], t], None
        else:
          x, x_axis = xs[h["stream"], t], 0
        run = lambda aux: jax.vmap(functools.partial(member_step, aux=aux),
                                   (0, 0, x_axis, None))(st, h, x, step0 + t)
        if dead_after is None:
          return run(False)
        # Under vmap a per-member `lax.cond` runs both branches; deciding once per chunk skips
        # the AuxK term (a second top-k and product) while no member of the chunk has a dead
        # latent (measured: 1.3 of 4.3 ms per Top-k member-step at d_sae = 200).
        any_dead = jnp.any(st.tokens_since_fired >= dead_after)
        return jax.lax.cond(any_dead, lambda: run(True), lambda: run(False))

      st, mets = jax.lax.scan(body, st, jnp.arange(steps_per_call))
      return st, jax.tree.map(lambda a: a[-1], mets)

    to_chunks = lambda a: a.reshape((local // chunk, chunk) + a.shape[1:])
    from_chunks = lambda a: a.reshape((local,) + a.shape[2:])
    st, met = jax.lax.map(run_chunk, (jax.tree.map(to_chunks, states),
                                      jax.tree.map(to_chunks, hp)))
    return jax.tree.map(from_chunks, st), jax.tree.map(from_chunks, met)

  member_spec = P(MEMBER_AXIS)
  xs_spec = P(None, None, DATA_AXIS)

  def call(states, hp, xs, step0):
    if xs is None:
      xs = gen_streams(step0)
    xs = jax.lax.with_sharding_constraint(xs, NamedSharding(mesh, xs_spec))
    return jax.shard_map(per_device, mesh=mesh,
                         in_specs=(member_spec, member_spec, xs_spec, P()),
                         out_specs=(member_spec, member_spec))(states, hp, xs, step0)

  member_sharding = NamedSharding(mesh, member_spec)
  return jax.jit(call, out_shardings=(member_sharding, member_sharding), donate_argnums=0)


@dataclasses.dataclass
class SweepResult:
  """The outcome of `train_sweep`: stacked final states, a table, per-member histories."""

  sae_cfg: Any
  members: list[dict]
  states: train_lib.TrainState
  """Stacked: every leaf has a leading member axis."""
  histories: list[list[dict]]
  rows: list[dict]
  diverged: dict[int, int]
  """member index -> first non-finite step, for members that were frozen."""
  seconds: float
  compiles: int

  def params(self, i: int) -> dict:
    """Parameters of member i."""
    return jax.tree.map(lambda a: np.asarray(a[i]), self.states.params)

  def save(self, folder) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes `sweep.json` (everything) and `sweep.csv` (the table) into `folder`."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js, cs = folder / "sweep.json", folder / "sweep.csv"
    js.write_text(json.dumps({"sae_config": self.sae_cfg.to_dict(), "rows": self.rows,
                              "histories": self.histories, "diverged": self.diverged,
                              "seconds": self.seconds}, indent=2, default=_jsonable))
    cols = list(dict.fromkeys(k for r in self.rows for k in r))
    with cs.open("w", newline="") as f:
      wr = csv.DictWriter(f, fieldnames=cols)
      wr.writeheader()
      for r in self.rows:
        wr.writerow({k: _jsonable(v) if isinstance(v, (np.ndarray, list)) else v
                     for k, v in r.items()})
    return js, cs


def _jsonable(v):
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, list):
    return json.dumps(v)
  raise TypeError(type(v))


def pareto_front(rows: Sequence[dict], x: str = "l0", y: str = "mse") -> list[int]:
  """Indices of rows not dominated in (x, y), both minimised, sorted by x."""
  pts = [(r[x], r[y], i) for i, r in enumerate(rows)
         if np.isfinite(r.get(x, np.nan)) and np.isfinite(r.get(y, np.nan))]
  pts.sort()
  front, best = [], np.inf
  for px, py, i in pts:
    if py < best:
      front.append(i)
      best = py
  return front


def train_sweep(sae_cfg, train_cfg: train_lib.TrainConfig, members: Sequence[dict], data, *,
                mesh: Mesh | None = None, steps_per_call: int | None = None,
                member_chunk: int = 4, progress: bool | str = True,
                eval_samples: int = 8192, initial_params: dict | None = None,
                checkpointer=None, resume: bool = False) -> SweepResult:
  """Trains every member of a sweep together, as one compiled program.

  Args:
    sae_cfg: the base SAE config (shapes, architecture; for topk, the largest k of the sweep).
    train_cfg: the base training config (steps, batch size, schedule; default learning rate and
      seed).
    members: one dict per member with any of `MEMBER_KEYS` (see `grid`).
    data: a `SyntheticProblem` (each member draws its own stream) or real activations in any form
      `train` accepts (all members share the same batches).
    mesh: a `("member", "data")` mesh (default `sweep_mesh(len(members))`).
    steps_per_call: steps run per compiled call (default `train_cfg.log_every`).
    member_chunk: members processed together within a device (cache-sized groups).
    progress: one progress bar for the whole sweep.
    eval_samples: held-out samples for the result table.
    initial_params: stacked starting parameters (every leaf with a leading member axis), instead
      of each member's seeded initialisation (e.g. to start from the closed form).
    checkpointer: a `checkpoint.Checkpointer`; the stacked state is saved after each compiled call
      that crosses a multiple of `checkpointer.every` steps, and at the end.
    resume: continue from the newest complete checkpoint (same members and configs required);
      the result equals an uninterrupted sweep, because every batch is a function of (seed, step).

  Returns:
    A `SweepResult`: stacked states, one table row per member (hyperparameters, final L_SAE, L_GT,
    MMCS, L0, dead fraction, features per latent, shrinkage for synthetic data), per-member
    histories, and the members frozen because they diverged.
  """
  synthetic = isinstance(data, SyntheticProblem)
  source = None if synthetic else data_lib.as_source(data, train_cfg.batch_size, seed=0)
  d_in = np.shape(data.W_p)[0] if synthetic else source.d_in
  if d_in != sae_cfg.d_in:
    raise V.WSAEInputError(f"data has d_in={d_in} but the SAE config has d_in={sae_cfg.d_in}.")
  if not synthetic and source.batch_size != train_cfg.batch_size:
    raise V.WSAEInputError(
        f"data yields batches of {source.batch_size} but train_cfg.batch_size is "
        f"{train_cfg.batch_size}; make them equal.")
  res = _resolve_members(sae_cfg, train_cfg, list(members), data if synthetic else None, source)
  K = len(res)
  mesh = mesh or sweep_mesh(K)
  if K % mesh.shape[MEMBER_AXIS]:
    raise V.WSAEInputError(
        f"{K} members do not split over the mesh's {mesh.shape[MEMBER_AXIS]} member devices; use a "
        f"multiple of {mesh.shape[MEMBER_AXIS]} members or sweep_mesh({K}).")
  if train_cfg.batch_size % mesh.shape[DATA_AXIS]:
    raise V.WSAEInputError(
        f"batch_size {train_cfg.batch_size} must be divisible by the {mesh.shape[DATA_AXIS]} "
        f"devices of the mesh's data axis.")
  T = steps_per_call or min(train_cfg.log_every, train_cfg.steps)
  V.check_int("steps_per_call", T, low=1)
  gammas = _member_gammas(res, sae_cfg, data if synthetic else None, source)

  # Distinct data streams: members with the same (data seed, sparsity) share batches.
  if synthetic:
    seeds = sorted({m["data_seed"] for m in res})
    streams = sorted({(m["data_seed"], float(m["sparsity"])) for m in res})
    stream_of = np.asarray([streams.index((m["data_seed"], float(m["sparsity"]))) for m in res])
    W_p = jnp.asarray(data.W_p, jnp.float32)
    C = _chunk_size(K, mesh, member_chunk)
    call = _build_call(
        sae_cfg, train_cfg, num_members=K, steps_per_call=T, member_chunk=member_chunk, mesh=mesh,
        problem_n=W_p.shape[1], W_p=W_p, magnitude=data.magnitude,
        seeds_D=jnp.asarray(seeds, jnp.uint32),
        stream_seed_idx=jnp.asarray([seeds.index(s) for s, _ in streams]),
        stream_sparsity=jnp.asarray([s for _, s in streams], jnp.float32),
        shared_chunks=bool(np.all(stream_of.reshape(-1, C) == stream_of.reshape(-1, C)[:, :1])),
        prng_impl=data.prng_impl)
  else:
    stream_of = np.zeros(K, np.int64)
    call = _build_call(sae_cfg, train_cfg, num_members=K, steps_per_call=T,
                       member_chunk=member_chunk, mesh=mesh, problem_n=None, W_p=None,
                       magnitude=None, seeds_D=None, stream_seed_idx=None, stream_sparsity=None,
                       shared_chunks=True)

  member_sharding = NamedSharding(mesh, P(MEMBER_AXIS))
  hp = {"learning_rate": jnp.asarray([m["learning_rate"] for m in res], jnp.float32),
        "l1_coefficient": jnp.asarray([m["l1_coefficient"] for m in res], jnp.float32),
        "k": jnp.asarray([m["k"] for m in res], jnp.int32),
        "gamma": jnp.asarray(gammas), "stream": jnp.asarray(stream_of, jnp.int32)}
  hp = jax.device_put(hp, member_sharding)
  seeds_K = jnp.asarray([m["seed"] for m in res], jnp.uint32)
  if initial_params is not None:
    want = jax.eval_shape(lambda: sae_lib.init(sae_cfg, jax.random.key(0)))
    for name, spec in want.items():
      got = np.shape(initial_params.get(name, ()))
      if got != (K,) + spec.shape:
        raise V.WSAEInputError(
            f"initial_params[{name!r}] must have shape {(K,) + spec.shape} (members first), got {got}.")
  states = jax.jit(jax.vmap(lambda s, p: train_lib.new_state(sae_cfg, train_cfg, params=p, seed=s)),
                   out_shardings=member_sharding)(seeds_K, initial_params)

  histories: list[list[dict]] = [[] for _ in range(K)]
  start, meta = 0, None
  if checkpointer is not None:
    meta = ckpt.run_meta(sae_cfg, train_cfg, gamma=gammas,
                         data={"kind": "sweep", "synthetic": synthetic, "steps_per_call": T,
                               "members": [{k: v for k, v in m.items() if k != "gamma"}
                                           for m in res],
                               "source": _describe_data(data) if synthetic
                               else data_lib.describe(source)})
    checkpointer.check_writable()
    restored = checkpointer.resume_or_start(states, meta, resume=resume)
    if restored is not None:
      states, saved = restored
      start = int(saved["step"])
      histories = saved.get("histories", histories)
  elif resume:
    raise V.WSAEInputError("resume=True needs a checkpointer to resume from.")
  xs_sharding = NamedSharding(mesh, P(None, None, DATA_AXIS))
  t0 = time.perf_counter()
  bar = tqdm(total=train_cfg.steps, initial=start,
             desc=progress if isinstance(progress, str) else f"sweep x{K}",
             disable=not progress, dynamic_ncols=True, leave=False)
  try:
    for step0 in range(start, train_cfg.steps, T):
      xs = None
      if not synthetic:
        xs = np.stack([np.asarray(source.batch(min(step0 + t, train_cfg.steps - 1)))
                       for t in range(T)])[None]
        xs = jax.device_put(xs, xs_sharding)
      states, met = call(states, hp, xs, jnp.int32(step0))
      met, div = jax.device_get((met, states.diverged_at))
      done = min(step0 + T, train_cfg.steps)
      for i in range(K):
        rec = {k: float(v[i]) for k, v in met.items()}
        rec["step"] = done
        if div[i] < 0:
          histories[i].append(rec)
      bar.set_postfix(loss=f"{np.nanmean(met['loss']):.4g}", frozen=int(np.sum(div >= 0)),
                      refresh=False)
      bar.update(done - bar.n)
      if checkpointer is not None and (done // checkpointer.every > step0 // checkpointer.every
                                       or done == train_cfg.steps):
        checkpointer.save(done, states, {**meta, "histories": histories})
  finally:
    bar.close()
  jax.block_until_ready(states)
  seconds = time.perf_counter() - t0
  diverged = {i: int(d) for i, d in enumerate(jax.device_get(states.diverged_at)) if d >= 0}
  rows = _table(sae_cfg, res, states, gammas, data if synthetic else None, source, histories,
                diverged, eval_samples)
  return SweepResult(sae_cfg=sae_cfg, members=res, states=states, histories=histories, rows=rows,
                     diverged=diverged, seconds=seconds, compiles=call._cache_size())


def _table(sae_cfg, res, states, gammas, problem, source, histories, diverged, eval_samples):
  params = jax.device_get(states.params)
  rows = []
  eval_cache = {}
  for i, m in enumerate(res):
    row = {k: m[k] for k in ("seed", "data_seed", "sparsity", "alpha", "learning_rate")}
    if isinstance(sae_cfg, sae_lib.ReLUSAEConfig):
      row["l1_coefficient"] = m["l1_coefficient"]
    if isinstance(sae_cfg, sae_lib.TopKSAEConfig):
      row["k"] = m["k"]
    row["gamma_given"] = m["gamma"] is not None
    row["diverged_at"] = diverged.get(i)
    p_i = jax.tree.map(lambda a: jnp.asarray(a[i]), params)
    cfg_i = dataclasses.replace(sae_cfg, k=m["k"]) if isinstance(
        sae_cfg, sae_lib.TopKSAEConfig) else sae_cfg
    gamma = None if (m["alpha"] is None and m["gamma"] is None) else gammas[i]
    if problem is not None:
      key = (m["data_seed"], m["sparsity"])
      if key not in eval_cache:
        src = data_lib.SyntheticSource(problem.W_p, m["sparsity"], 1, seed=m["data_seed"],
                                       magnitude=problem.magnitude, prng_impl=problem.prng_impl)
        eval_cache[key] = np.asarray(src.features(HELD_OUT_STEP + 1, eval_samples))
      row.update(metrics_lib.evaluate(cfg_i, p_i, eval_cache[key], problem.W_p, gamma=gamma))
    else:
      if "x" not in eval_cache:
        eval_cache["x"] = np.concatenate(
            [np.asarray(source.batch(t)) for t in range(max(1, eval_samples // source.batch_size))])
      x = jnp.asarray(eval_cache["x"])
      z, x_hat = sae_lib.forward(cfg_i, p_i, x)
      row.update({"l_sae": float(losses.reconstruction_loss(x, x_hat, gamma)[0]),
                  "mse": float(losses.reconstruction_loss(x, x_hat)[0]),
                  "fvu": metrics_lib.fvu(x, x_hat), "l0": metrics_lib.l0(z),
                  "dead_frac": metrics_lib.dead_fraction(z),
                  "latent_var": float(np.mean(metrics_lib.latent_variance(z)))})
    row["final_train_loss"] = histories[i][-1]["loss"] if histories[i] else float("nan")
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------------------------
# Sweep files: `wsae sweep CONFIG.toml` (or .json).
# ----------------------------------------------------------------------------------------------

SWEEP_FILE_DOC = """\
A sweep file is TOML (or the same structure in JSON) with these tables:

  [sae]      architecture = "tied" | "relu" | "topk", d_sae, and that config's other fields
             (k, l1_coefficient, ...). d_in comes from the data.
  [train]    any TrainConfig field: steps, batch_size, learning_rate, warmup_steps, ...
  [data]     synthetic: geometry = "polygon" (planes, k, mono) | "random" (n, n_p, seed) |
             "toy" (n, n_p, sparsity, seed); or real: activations = "file.npy" (tokens, d_in).
  [grid]     axes to cross, each a list: seed, data_seed, sparsity, alpha, learning_rate,
             l1_coefficient, k.
  [output]   dir = "sweep_out" (sweep.json, sweep.csv, sweep.png and checkpoints/ go there),
             checkpoint_every = 1000 (steps between checkpoints; `wsae sweep --resume` continues).

Example (experiments/configs/sweep_small.toml):

  [sae]
  architecture = "tied"
  d_sae = 28
  [train]
  steps = 1000
  batch_size = 1024
  learning_rate = 3e-3
  [data]
  geometry = "polygon"
  planes = 8
  k = 3
  mono = 4
  [grid]
  seed = [0, 1, 2]
  sparsity = [0.7, 0.9, 0.99]
  alpha = [0.0, 1.0]
  [output]
  dir = "sweep_out"
"""


# Each table's fields, checked before anything runs (an unknown key is a typo, not a default).
_FILE_TABLES_REQUIRED = {"sae": dict, "data": dict, "grid": dict}
_FILE_TABLES_OPTIONAL = {"train": dict, "output": dict}
_DATA_FIELDS = {
    "polygon": {"geometry": str, "planes": int, "k": int, "mono": int, "magnitude": str},
    "random": {"geometry": str, "n": int, "n_p": int, "seed": int, "magnitude": str},
    "toy": {"geometry": str, "n": int, "n_p": int, "sparsity": float, "seed": int,
            "magnitude": str},
}
_OUTPUT_FIELDS = {"dir": str, "checkpoint_every": int}
# What a sweep writes in its output folder; `--overwrite` removes exactly these.
SWEEP_FILES = ("checkpoints", "sweep.json", "sweep.csv", "sweep.png")


def load_sweep_file(path) -> dict:
  """Reads a sweep file (.toml or .json) and checks every table's fields and types.

  Raises `WSAEInputError` naming the file, the table and the field for anything it does not
  expect, before any work starts.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise V.WSAEInputError(f"sweep file {str(path)!r} does not exist.")
  text = path.read_text()
  if path.suffix == ".toml":
    import tomllib
    try:
      spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
      raise V.WSAEInputError(f"{path}: not valid TOML: {e}") from None
  elif path.suffix == ".json":
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as e:
      raise V.WSAEInputError(f"{path}: not valid JSON: {e}") from None
  else:
    raise V.WSAEInputError(f"{path}: sweep files are .toml or .json, got {path.suffix!r}.")
  try:
    V.check_fields(str(path), spec, _FILE_TABLES_REQUIRED, _FILE_TABLES_OPTIONAL)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{e}\n\n{SWEEP_FILE_DOC}") from None
  sae_spec = spec["sae"]
  V.check_fields(f"{path}: [sae]", sae_spec, {}, {"architecture": str}, allow_unknown=True)
  if "d_in" in sae_spec:
    raise V.WSAEInputError(f"{path}: [sae] must not set 'd_in'; it comes from the [data] table.")
  data = spec["data"]
  if "activations" in data:
    V.check_fields(f"{path}: [data]", data, {"activations": str})
  else:
    geometry = data.get("geometry", "polygon")
    if geometry not in _DATA_FIELDS:
      raise V.WSAEInputError(f"{path}: [data] geometry must be one of {sorted(_DATA_FIELDS)} (or "
                             f"give activations = \"file.npy\"), got {geometry!r}.")
    V.check_fields(f"{path}: [data] (geometry {geometry!r})", data, {}, _DATA_FIELDS[geometry])
    if data.get("magnitude", "uniform") not in sp.MAGNITUDES:
      raise V.WSAEInputError(f"{path}: [data] magnitude must be one of {sp.MAGNITUDES}, got "
                             f"{data['magnitude']!r}.")
  V.check_fields(f"{path}: [grid]", spec["grid"], {}, {k: list for k in MEMBER_KEYS})
  for axis, values in spec["grid"].items():
    if not values:
      raise V.WSAEInputError(f"{path}: [grid] {axis} is an empty list; give at least one value.")
  V.check_fields(f"{path}: [output]", spec.get("output", {}), {}, _OUTPUT_FIELDS)
  return spec


def _data_from_spec(d: dict, where: str = "[data]"):
  d = dict(d)
  if "activations" in d:
    from wsae_jax import activations
    _, shards = activations.read_metadata(d["activations"])  # missing, rank, dtype: clear errors
    if len(shards) != 1 or not shards[0].path.samefile(d["activations"]):
      raise V.WSAEInputError(f"{where} activations must be a (tokens, d_in) .npy file, got the "
                             f"store folder {d['activations']!r}.")
    return np.load(d["activations"], mmap_mode="r")
  geometry = d.pop("geometry", "polygon")
  if geometry == "polygon":
    W = sp.polygon_matrix(d.get("planes", 8), d.get("k", 3), n_mono=d.get("mono", 4))
  elif geometry == "random":
    W = np.asarray(sp.random_matrix(jax.random.key(d.get("seed", 0)), d.get("n_p", 20),
                                    d.get("n", 40)))
  elif geometry == "toy":
    W = sp.toy_model_matrix(jax.random.key(d.get("seed", 0)), d.get("n", 200), d.get("n_p", 20),
                            d.get("sparsity", 0.9))
  else:
    raise V.WSAEInputError(f"{where} geometry must be polygon, random or toy, got {geometry!r}.")
  return SyntheticProblem(W, magnitude=d.get("magnitude", "uniform"))


def run_sweep_file(path, *, progress: bool = True, echo=print, resume: bool = False,
                   overwrite: bool = False) -> SweepResult:
  """Runs the sweep a file describes and writes its results; returns the `SweepResult`.

  Checkpoints go to `<output dir>/checkpoints` every `[output] checkpoint_every` steps (default
  1000); `resume=True` continues from the newest complete one. An output folder that already
  holds a sweep is refused unless `resume` (the same sweep) or `overwrite` (its checkpoints and
  results are deleted once every input check has passed).
  """
  spec = load_sweep_file(path)
  data = _data_from_spec(spec["data"], f"{path}: [data]")
  d_in = np.shape(data.W_p)[0] if isinstance(data, SyntheticProblem) else np.shape(data)[1]
  sae_spec = dict(spec["sae"])
  arch = sae_spec.pop("architecture", "tied")
  ks = spec["grid"].get("k", [])
  if arch == "topk" and ks and all(isinstance(k, int) and not isinstance(k, bool) for k in ks):
    sae_spec["k"] = max(ks)  # the compiled program keeps up to the largest k
  if isinstance(data, SyntheticProblem) and "d_sae" not in sae_spec:
    sae_spec["d_sae"] = np.shape(data.W_p)[1]
  sae_cfg = sae_lib.config_from_dict({"architecture": arch, "d_in": d_in, **sae_spec},
                                     f"{path}: [sae]")
  train_cfg = V.build_dataclass(train_lib.TrainConfig, spec.get("train", {}), f"{path}: [train]")
  try:
    members = grid(**{k: list(v) for k, v in spec["grid"].items()})
    _resolve_members(sae_cfg, train_cfg, members,
                     data if isinstance(data, SyntheticProblem) else None, None)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{path}: [grid]: {e}") from None
  out = pathlib.Path(spec.get("output", {}).get("dir", "sweep_out"))
  V.check_writable_dir(out, f"{path}: [output] dir")
  earlier = [out / f for f in SWEEP_FILES if (out / f).exists()]
  if earlier and not (resume or overwrite):
    raise V.WSAEInputError(
        f"{out} already holds a sweep ({', '.join(p.name for p in earlier)}); pass --resume to "
        f"continue it, --overwrite to replace it, or set another [output] dir.")
  if overwrite:
    import shutil
    for p in earlier:
      shutil.rmtree(p) if p.is_dir() else p.unlink()
  echo(f"sweep: {len(members)} members of a {arch} SAE (d_in={d_in}, d_sae={sae_cfg.d_sae}), "
       f"{train_cfg.steps} steps each, on {len(jax.devices())} device(s)")
  checkpointer = ckpt.Checkpointer(out / "checkpoints",
                                   every=spec.get("output", {}).get("checkpoint_every", 1000))
  try:
    res = train_sweep(sae_cfg, train_cfg, members, data, progress=progress,
                      checkpointer=checkpointer, resume=resume)
  finally:
    checkpointer.close()
  js, cs = res.save(out)
  _plot_sweep(res, out / "sweep.png")
  if res.diverged:
    echo(f"members frozen after a non-finite loss: {res.diverged} (member: step)")
  echo(f"trained in {res.seconds:.1f} s; wrote {js}, {cs} and {out / 'sweep.png'}")
  return res


def _plot_sweep(res: SweepResult, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = res.rows
  fig, ax = plt.subplots(figsize=(5, 4))
  l0 = np.asarray([r["l0"] for r in rows])
  mse = np.asarray([r["mse"] for r in rows])
  ax.scatter(l0, mse, s=14, alpha=0.7, label="members")
  front = pareto_front(rows)
  ax.plot(l0[front], mse[front], "r-o", ms=4, label="Pareto front")
  ax.set_xlabel("L0 (active latents per example)")
  ax.set_ylabel("reconstruction MSE")
  ax.set_ylim(bottom=0)
  ax.set_xlim(left=0)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

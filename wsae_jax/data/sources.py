"""Batch sources for training: batch `t` is a function of `(seed, t)`, so runs are reproducible.

A source exposes `d_in`, `batch_size` and `batch(step, sharding) -> x_BxD` already placed on the
mesh. `as_source` turns what a user has (a `SyntheticSource`, an array of activations, an iterable
of batches) into one.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from wsae_jax import _validate as V
from wsae_jax.data import superposition as sp

PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


class SyntheticSource:
  """On-device superposition data: `x ~ sample_features(fold_in(key, step))`, `x_p = x W_pᵀ`.

  Args:
    W_p: superposition matrix `(n_p, n)`.
    sparsity: probability that a feature is 0, in [0, 1).
    batch_size: examples per step.
    seed: data seed; the batch at `step` depends only on `(seed, step)`.
    magnitude: law of the active magnitudes (see `sample_features`).
    rates: relative firing rate per feature (feature `j` is active with probability
      `(1 − sparsity)·rates[j]`); None: every feature at `1 − sparsity`.
    prng_impl: JAX PRNG implementation of the data stream: "threefry2x32" (default: the same
      batches on any number of devices) or "rbg" / "unsafe_rbg" (often faster on accelerators;
      batches may differ across device counts and JAX versions, and a sweep's batches are not
      bit-identical to `train`'s: these generators depend on how a draw is batched). On the
      2-core CPU neither wins reliably (`benchmarks/bench_prng.py`, RESULTS.md).
  """

  def __init__(
    self,
    W_p,
    sparsity: float,
    batch_size: int,
    *,
    seed: int = 0,
    magnitude: sp.Magnitude = "uniform",
    rates=None,
    prng_impl: str = "threefry2x32",
  ):
    V.check_matrix("W_p", W_p, shape=(None, None))
    V.check_range("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
    if rates is not None:
      sp.check_rates(rates, np.shape(W_p)[1], sparsity)
    V.check_int("batch_size", batch_size, low=1)
    if magnitude not in sp.MAGNITUDES:
      raise V.WSAEInputError(f"magnitude must be one of {sp.MAGNITUDES}, got {magnitude!r}.")
    self.W_p = jnp.asarray(W_p, jnp.float32)
    self.sparsity = float(sparsity)
    self.batch_size = batch_size
    self.seed = seed
    self.magnitude = magnitude
    self.rates = None if rates is None else np.asarray(rates, np.float32)
    self.d_in, self.n = self.W_p.shape
    if prng_impl not in PRNG_IMPLS:
      raise V.WSAEInputError(f"prng_impl must be one of {PRNG_IMPLS}, got {prng_impl!r}.")
    self.prng_impl = prng_impl
    self._key = jax.random.key(seed, impl=prng_impl)
    self._gen: dict = {}

  def features(self, step, batch_size: int | None = None) -> jax.Array:
    """Ground-truth features `(batch, n)` of step `step`."""
    return sp.sample_features(
      jax.random.fold_in(self._key, step),
      batch_size or self.batch_size,
      self.n,
      self.sparsity,
      magnitude=self.magnitude,
      rates=self.rates,
    )

  def sample(self, step, batch_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """`(x, x_p)` of step `step`; use a step outside the training range for held-out data."""
    x = self.features(step, batch_size)
    return x, sp.observe(x, self.W_p)

  def batch(self, step: int, sharding: NamedSharding | None = None) -> jax.Array:
    gen = self._gen.get(sharding)
    if gen is None:
      gen = jax.jit(lambda s: sp.observe(self.features(s), self.W_p), out_shardings=sharding)
      self._gen[sharding] = gen
    return gen(jnp.int32(step))


class ArraySource:
  """Minibatches from an in-memory (or memmapped) `(num_tokens, d_in)` array.

  Each epoch visits every row once in an order drawn from `fold_in(key(seed), epoch)`; a final
  partial batch is dropped. The whole array is checked for NaN/inf and dtype up front.
  """

  def __init__(
    self, x_NxD, batch_size: int, *, seed: int = 0, shuffle: bool = True, check: bool = True
  ):
    V.check_rank("activations", x_NxD, 2, hint="Pass a (num_tokens, d_in) matrix.")
    V.check_float("activations", x_NxD)
    V.check_int("batch_size", batch_size, low=1)
    if np.shape(x_NxD)[0] < batch_size:
      raise V.WSAEInputError(
        f"activations have {np.shape(x_NxD)[0]} rows, fewer than batch_size={batch_size}; "
        f"lower batch_size or provide more data."
      )
    if check:
      V.check_finite("activations", x_NxD)
    self.x = x_NxD
    self.batch_size = batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.d_in = int(np.shape(x_NxD)[1])
    self.steps_per_epoch = int(np.shape(x_NxD)[0]) // batch_size
    self._cached_order: tuple[int, np.ndarray | None] = (-1, None)

  def _order(self, epoch: int) -> np.ndarray:
    if self._cached_order[0] != epoch:
      n = int(np.shape(self.x)[0])
      order = (
        np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
      )
      self._cached_order = (epoch, order)
      return order
    return self._cached_order[1]  # type: ignore[return-value]  # set for this epoch above

  def indices(self, step: int) -> np.ndarray:
    epoch, i = divmod(int(step), self.steps_per_epoch)
    idx = self._order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
    return np.sort(idx)  # sorted reads are friendlier to memmapped files.

  def batch(self, step: int, sharding: NamedSharding | None = None) -> jax.Array:
    idx = self.indices(step)
    return put_batch(
      lambda sl: np.asarray(self.x[idx[sl]], np.float32), (self.batch_size, self.d_in), sharding
    )


class IterableSource:
  """Wraps an iterable of `(batch, d_in)` arrays; steps must be requested in order."""

  def __init__(self, batches: Iterable[Any], batch_size: int | None = None):
    self._it: Iterator[Any] = iter(batches)
    self._first = np.asarray(next(self._it))
    V.check_rank("batch", self._first, 2, hint="Each batch must be (batch_size, d_in).")
    V.check_float("batch", self._first)
    self.batch_size = batch_size or self._first.shape[0]
    self.d_in = int(self._first.shape[1])
    self._next_step = 0

  def batch(self, step: int, sharding: NamedSharding | None = None) -> jax.Array:
    if step != self._next_step:
      raise V.WSAEInputError(
        f"IterableSource serves steps in order; asked for step {step}, next is {self._next_step}."
      )
    rows = self._first if step == 0 else np.asarray(next(self._it))
    if rows.shape != (self.batch_size, self.d_in):
      raise V.WSAEInputError(
        f"batch at step {step} has shape {rows.shape}, expected {(self.batch_size, self.d_in)}."
      )
    self._next_step += 1
    rows = np.asarray(rows, np.float32)
    return put_batch(lambda sl: rows[sl], rows.shape, sharding)


def put_batch(read_rows, shape, sharding):
  """Places a host batch on the mesh; with several processes each reads only its own rows."""
  if sharding is None or jax.process_count() == 1:
    return jax.device_put(read_rows(slice(None)), sharding)
  # Multi-host: each process reads the rows its own devices hold (a contiguous range: the mesh
  # lists devices process by process): its share of the batch when the "data" axis spans the
  # processes, the whole batch when the processes split the latents instead.
  rows = [ix[0] for ix in sharding.addressable_devices_indices_map(shape).values()]
  lo = min(r.start or 0 for r in rows)
  hi = max(shape[0] if r.stop is None else r.stop for r in rows)
  return jax.make_array_from_process_local_data(sharding, read_rows(slice(lo, hi)), shape)


def as_source(data, batch_size: int | None = None, *, seed: int = 0):
  """Turns a source, a `(tokens, d_in)` array, or an iterable of batches into a batch source."""
  if hasattr(data, "batch") and hasattr(data, "d_in"):
    return data
  if isinstance(data, (np.ndarray, jax.Array)) or hasattr(data, "__array__"):
    if batch_size is None:
      raise V.WSAEInputError("batch_size is required to draw minibatches from an array.")
    return ArraySource(data, batch_size, seed=seed)
  if isinstance(data, Iterable):
    return IterableSource(data, batch_size)
  raise V.WSAEInputError(
    f"cannot train from {type(data).__name__}; pass a SyntheticSource, a (tokens, d_in) array or "
    f"an iterable of (batch, d_in) arrays."
  )


def describe(source) -> dict:
  """What identifies a source's batch stream (saved in checkpoints, compared on resume)."""
  import hashlib

  if hasattr(source, "describe"):
    return source.describe()
  if isinstance(source, SyntheticSource):
    digest = hashlib.sha1(np.asarray(source.W_p, np.float32).tobytes()).hexdigest()
    return {
      "kind": "synthetic",
      "seed": source.seed,
      "sparsity": source.sparsity,
      "magnitude": source.magnitude,
      "batch_size": source.batch_size,
      "W_p_sha1": digest,
      **({} if source.rates is None else {"rates": source.rates.tolist()}),
      **({} if source.prng_impl == "threefry2x32" else {"prng_impl": source.prng_impl}),
    }
  if isinstance(source, ArraySource):
    return {
      "kind": "array",
      "seed": source.seed,
      "shuffle": source.shuffle,
      "rows": int(np.shape(source.x)[0]),
      "d_in": source.d_in,
      "batch_size": source.batch_size,
      "fingerprint": array_fingerprint(source.x),
    }
  return {"kind": type(source).__name__, "batch_size": source.batch_size, "d_in": source.d_in}


def array_fingerprint(x, rows: int = 4096) -> str:
  """A content fingerprint of a `(tokens, d_in)` array: sha256 of its shape, dtype and up to
  `rows` evenly spaced rows. Cheap on a memory-mapped multi-GB array; tells another array of the
  same shape apart (it is a sample, so a single changed value may go unseen)."""
  import hashlib

  n = int(np.shape(x)[0])
  idx = (
    np.unique(np.linspace(0, n - 1, num=min(n, rows)).astype(np.int64))
    if n
    else np.zeros(0, np.int64)
  )
  h = hashlib.sha256(f"{tuple(np.shape(x))}|{np.asarray(x[:0]).dtype}".encode())
  h.update(np.ascontiguousarray(np.asarray(x[idx])).tobytes())
  return h.hexdigest()[:32]


def resumable(source) -> bool:
  """Whether batch `t` can be produced without producing batches 0..t-1 first."""
  return not isinstance(source, IterableSource)

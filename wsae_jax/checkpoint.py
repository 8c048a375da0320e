"""Checkpoints of the whole training state with orbax: save every N steps, keep the last K, resume.

A checkpoint holds the `TrainState` (parameters, optimiser state, step, dead-latent counters, the
divergence flag) and a JSON record of everything else a resumed run needs to be the same run: the
SAE and training configs, γ, the normalisation scale, and the data stream's description (kind,
seed; the position is the step, because every batch is a function of `(seed, step)`).

Writes are atomic: orbax writes into a temporary folder and renames it when complete, so a crash
or SIGKILL mid-save never leaves a checkpoint that looks finished. A checkpoint that fails to
restore (truncated or corrupted files) raises `CheckpointError` naming its folder, and
`restore_latest` falls back to the previous complete one with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wsae_jax import _validate as V

log = logging.getLogger(__name__)

# Fields that may differ between the run that wrote a checkpoint and the run resuming from it.
_RESUMABLE_DIFFERENCES = frozenset({"log_every"})


class CheckpointError(V.WSAEInputError):
  """A checkpoint cannot be used: corrupted, truncated, or written by an incompatible run."""


def _jsonable(v):
  if isinstance(v, np.ndarray) or isinstance(v, jax.Array):
    return np.asarray(v).tolist()
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, tuple):
    return list(v)
  return v


def _clean(d):
  if isinstance(d, dict):
    return {k: _clean(v) for k, v in d.items()}
  if isinstance(d, (list, tuple)):
    return [_clean(v) for v in d]
  return _jsonable(d)


class Checkpointer:
  """Saves and restores training states under one folder (one sub-folder per step).

  Args:
    directory: where checkpoints live (created if missing).
    every: save when the step count is a multiple of this (and always at the end of a run).
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory, *, every: int = 1000, keep: int = 3):
    V.check_int("every", every, low=1)
    V.check_int("keep", keep, low=1)
    self.directory = pathlib.Path(directory).absolute()
    self.every = every
    self.keep = keep
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                             create=True))

  def steps(self) -> list[int]:
    """Steps of the complete checkpoints, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def path(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def should_save(self, step: int) -> bool:
    return step % self.every == 0

  def save(self, step: int, state, meta: dict) -> None:
    """Writes `state` and `meta` as the checkpoint of `step` (atomically; blocks until done)."""
    meta = _clean({**meta, "step": int(step)})
    if int(step) in self.steps():  # a damaged checkpoint we fell back from: replace it
      self._manager.delete(int(step))
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """Restores the checkpoint of `step` into the structure and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      out = self._manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      state, meta = out.state, out.meta
      jax.block_until_ready(state)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      raise CheckpointError(
          f"checkpoint {self.path(step)} could not be restored ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:300]}); it is corrupted, truncated, or does not match this "
          f"run's parameter shapes.") from e
    return state, meta

  def restore_latest(self, target, expected_meta: dict | None = None):
    """The newest checkpoint that restores, or None if there is none.

    Damaged checkpoints are skipped with a warning naming them. A checkpoint written by a run with
    a different configuration raises `CheckpointError` (resuming it would silently change the run).
    """
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore(step, target)
      except CheckpointError as e:
        warnings.warn(f"{e} Falling back to the previous checkpoint.", RuntimeWarning,
                      stacklevel=2)
        continue
      if expected_meta is not None:
        check_compatible(meta, expected_meta, self.path(step))
      return state, meta
    return None

  def close(self):
    self._manager.close()


def check_compatible(saved: dict, current: dict, where) -> None:
  """Raises `CheckpointError` listing every config field that differs between saved and current."""
  diffs = []
  for section in ("sae_config", "train_config", "data"):
    a, b = saved.get(section, {}), _clean(current.get(section, {}))
    for k in sorted(set(a) | set(b)):
      if k in _RESUMABLE_DIFFERENCES:
        continue
      if a.get(k) != b.get(k):
        diffs.append(f"{section}.{k}: checkpoint has {a.get(k)!r}, this run has {b.get(k)!r}")
  sg, cg = saved.get("gamma"), _clean(current.get("gamma"))
  if (sg is None) != (cg is None) or (sg is not None and not np.allclose(sg, cg, rtol=0, atol=0)):
    diffs.append("gamma differs")
  if diffs:
    raise CheckpointError(
        f"checkpoint {where} was written by an incompatible run:\n  " + "\n  ".join(diffs)
        + "\nStart a fresh run in another folder, or resume with the original settings.")


def run_meta(sae_cfg, train_cfg, *, gamma=None, data: dict | None = None,
             scale: float | None = None) -> dict:
  """The JSON record saved beside each state."""
  return {"sae_config": sae_cfg.to_dict(), "train_config": dataclasses.asdict(train_cfg),
          "gamma": None if gamma is None else np.asarray(gamma, np.float64).tolist(),
          "normalization_scale": scale, "data": data or {}}


def load_params(directory):
  """`(sae_config, params, meta)` of the newest usable checkpoint in `directory`, from its record."""
  from wsae_jax import sae as sae_lib
  from wsae_jax import train as train_lib
  directory = pathlib.Path(directory)
  if not directory.exists():
    raise CheckpointError(f"no checkpoints at {directory}.")
  ck = Checkpointer(directory)
  for step in reversed(ck.steps()):
    meta_file = ck.path(step) / "meta" / "metadata"
    try:
      meta = json.loads(meta_file.read_text())
      sc = dict(meta["sae_config"])
      cfg = sae_lib.make_config(sc.pop("architecture"), **sc)
      tc = train_lib.TrainConfig(**meta["train_config"])
      target = train_lib.new_state(cfg, tc)
      state, meta = ck.restore(step, target)
    except (OSError, KeyError, ValueError, CheckpointError) as e:
      warnings.warn(f"skipping checkpoint {ck.path(step)}: {e}", RuntimeWarning, stacklevel=2)
      continue
    return cfg, state.params, meta
  raise CheckpointError(f"no usable checkpoint in {directory}.")

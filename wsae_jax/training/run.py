"""The run lifecycle: what identifies a run, where it starts (fresh or resumed), how its SAE is read
back. One place, used by `trainer.train`, `sweep.train_sweep` and the CLI.

A checkpoint's JSON record (`run_meta`) holds everything a resumed run needs to be the same run:
the SAE and training configs, γ, the normalisation scale, and the data stream's description (kind,
seed; the position is the step, because every batch is a function of `(seed, step)`). Resuming
compares records before any array is restored: a different run is refused with the differing
fields, and nothing is touched; a damaged checkpoint is skipped for the previous complete one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import warnings

import numpy as np

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.storage import records
from wsae_jax.storage.checkpoint import Checkpointer, CheckpointError
from wsae_jax.training import state as state_lib
from wsae_jax.training.config import TrainConfig

log = logging.getLogger(__name__)

# Fields that may differ between the run that wrote a checkpoint and the run resuming from it.
_RESUMABLE_DIFFERENCES = frozenset({"log_every"})
# Fields added since checkpoints were first written: a record without one had this value.
_ADDED_FIELDS = {"train_config": {"compute_dtype": "float32"}}
# Data fields that describe rather than identify (the store's fingerprint identifies its
# content): records written before they were added stay resumable.
_DESCRIPTIVE_DATA = frozenset({"context_len", "corpus"})


class IncompatibleRunError(CheckpointError):
  """The checkpoint is intact but was written by a run with other settings or data: resuming
  must stop here rather than fall back to an older checkpoint of the same run."""


def run_meta(
  sae_cfg,
  train_cfg,
  *,
  gamma=None,
  data: dict | None = None,
  scale: float | None = None,
  standardization: dict | None = None,
  gamma_schedule: dict | None = None,
  mesh: dict | None = None,
) -> dict:
  """The JSON record saved beside each state (and as `wsae train`'s run.json). `mesh` (its axes'
  sizes, `parallel.describe`) says where the run trained; it does not identify the run: a run
  resumes on another mesh."""
  meta = {
    "sae_config": sae_cfg.to_dict(),
    "train_config": dataclasses.asdict(train_cfg),
    "gamma": None if gamma is None else np.asarray(gamma, np.float64).tolist(),
    "normalization_scale": scale,
    "data": data or {},
  }
  if standardization is not None:
    meta["standardization"] = records.clean(standardization)
  if gamma_schedule is not None:
    meta["gamma_schedule"] = gamma_schedule
  if mesh is not None:
    meta["mesh"] = mesh
  return meta


# The checkpoint record's schema (what `run_meta` writes, plus the step and a sweep's histories).
_META_REQUIRED = {"sae_config": dict, "train_config": dict, "data": dict, "step": int}
_META_OPTIONAL = {
  "gamma": (list, type(None)),
  "normalization_scale": (float, type(None)),
  "standardization": dict,
  "gamma_schedule": dict,
  "gamma_current": list,
  "histories": list,
  "mesh": dict,
}


def check_meta(meta, where) -> dict:
  """Checks a checkpoint record against its schema; `CheckpointError` names the file and field."""
  try:
    V.check_fields(f"checkpoint record {where}", meta, _META_REQUIRED, _META_OPTIONAL)
    V.check_fields(
      f"checkpoint record {where}: sae_config",
      meta["sae_config"],
      {"architecture": str, "d_in": int, "d_sae": int},
      allow_unknown=True,
    )
  except CheckpointError:
    raise
  except V.WSAEInputError as e:
    raise CheckpointError(str(e)) from None
  return meta


def read_record(ck: Checkpointer, step: int) -> dict:
  """The checkpoint's record, read and checked against the schema without touching its arrays."""
  return check_meta(ck.read_meta(step), ck.meta_file(step))


def check_compatible(saved: dict, current: dict, where) -> None:
  """Raises `IncompatibleRunError` listing every field that differs between saved and current."""
  diffs = []
  for section in ("sae_config", "train_config", "data", "gamma_schedule"):
    a, b = saved.get(section, {}), records.clean(current.get(section, {}))
    a = {**_ADDED_FIELDS.get(section, {}), **a}
    for k in sorted(set(a) | set(b)):
      if k in _RESUMABLE_DIFFERENCES or (section == "data" and k in _DESCRIPTIVE_DATA):
        continue
      if a.get(k) != b.get(k):
        diffs.append(f"{section}.{k}: checkpoint has {a.get(k)!r}, this run has {b.get(k)!r}")
  sg, cg = saved.get("gamma"), records.clean(current.get("gamma"))
  if (sg is None) != (cg is None) or (sg is not None and not np.allclose(sg, cg, rtol=0, atol=0)):
    diffs.append("gamma differs")
  if diffs:
    raise IncompatibleRunError(
      f"{where} was written by an incompatible run:\n  "
      + "\n  ".join(diffs)
      + "\nNothing was changed. Start a fresh run in another folder, or resume with the "
      "original settings."
    )


def check_resumable(run_file, meta: dict) -> None:
  """A run folder's `run.json` (if it has one) against the record of the run about to resume
  there: raises before any checkpoint is touched when it cannot be read or differs."""
  run_file = pathlib.Path(run_file)
  if not run_file.exists():
    return
  try:
    saved = json.loads(run_file.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise V.WSAEInputError(
      f"{run_file} cannot be read ({e}); the run folder is damaged. Start "
      f"afresh with --overwrite or in another folder."
    ) from None
  V.check_fields(str(run_file), saved, {}, allow_unknown=True)
  check_compatible(saved, meta, f"the run in {run_file.parent} ({run_file.name})")


def restore_latest(ck: Checkpointer, target, expected_meta: dict | None = None):
  """The newest usable checkpoint of `ck` as `(state, meta)`, or None if the folder holds none.

  Each checkpoint's record is read and compared with `expected_meta` *before* any array is
  restored: a checkpoint written by a run with a different configuration or data raises
  `IncompatibleRunError` listing the differences, and nothing is touched. A damaged checkpoint
  (unreadable record or arrays) is skipped with a warning naming it. If checkpoints exist but
  none can be used, `CheckpointError` is raised rather than returning None, so a caller never
  silently restarts from step 0 over a run's files.
  """
  steps = ck.steps()
  problems = []
  for step in reversed(steps):
    try:
      meta = read_record(ck, step)
      if expected_meta is not None:
        check_compatible(meta, expected_meta, f"checkpoint {ck.path(step)}")
      state, meta = ck.restore(step, target)
    except IncompatibleRunError:
      raise
    except CheckpointError as e:
      problems.append(str(e))
      warnings.warn(f"{e} Falling back to the previous checkpoint.", RuntimeWarning, stacklevel=2)
      continue
    return state, meta
  if steps:
    raise CheckpointError(
      f"none of the {len(steps)} checkpoint(s) in {ck.directory} can be used:\n  "
      + "\n  ".join(problems)
      + "\nNothing was changed. Move the folder away (or pass "
      "--overwrite to `wsae train`) to start afresh."
    )
  return None


def resume_or_start(ck: Checkpointer | None, target, meta: dict, *, resume: bool):
  """Where a run starts: `(state, saved_meta)` to resume from, or None to start from `target`.

  `ck=None` (no checkpointing) starts fresh; `resume=True` then is an error. `resume=False`
  requires a folder without checkpoints: a second run written beside the first would mix the two
  (keep-K pruning would delete the newer run's checkpoints as they are written). `resume=True`
  returns `restore_latest(ck, target, meta)`, or None when there is nothing to resume yet.
  """
  if ck is None:
    if resume:
      raise V.WSAEInputError("resume=True needs a checkpointer to resume from.")
    return None
  ck.check_writable()
  if resume:
    restored = restore_latest(ck, target, expected_meta=meta)
    if restored is not None:
      log.info(
        "resumed from %s at step %d", ck.path(int(restored[1]["step"])), int(restored[1]["step"])
      )
    return restored
  steps = ck.steps()
  if steps:
    raise CheckpointError(
      f"{ck.directory} already holds checkpoints (steps {steps}) of an earlier run; pass "
      f"resume=True to continue it (same settings), or give this run an empty folder "
      f"(`wsae train --overwrite` replaces the old run)."
    )
  return None


def load_params(directory):
  """`(sae_config, params, meta)` of the newest usable checkpoint in `directory`, from its record."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise CheckpointError(f"no checkpoints at {directory} (no such folder).")
  ck = Checkpointer(directory)
  problems = []
  for step in reversed(ck.steps()):
    try:
      meta = read_record(ck, step)
      where = f"checkpoint record {ck.meta_file(step)}"
      cfg = models.config_from_dict(meta["sae_config"], f"{where}: sae_config")
      tc = V.build_dataclass(TrainConfig, meta["train_config"], f"{where}: train_config")
      state, meta = ck.restore(step, state_lib.new_state(cfg, tc))
    except V.WSAEInputError as e:
      problems.append(str(e))
      warnings.warn(f"skipping checkpoint {ck.path(step)}: {e}", RuntimeWarning, stacklevel=2)
      continue
    return cfg, state.params, meta
  raise CheckpointError(
    f"no usable checkpoint in {directory}" + (":\n  " + "\n  ".join(problems) if problems else ".")
  )

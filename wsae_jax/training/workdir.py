"""A run as a library object: its folder's layout, starting a run there, and opening one.

What `wsae train` guarantees, without the CLI (flax's examples call it `train_and_evaluate(config,
workdir)`):

    run = workdir.start_run("runs/topk", sae_cfg, train_cfg, workdir.RunData(source))
    opened = workdir.open_run("runs/topk")       # config, parameters, record, γ, history

`start_run` claims the folder (locked; refused if it would mix with another run), checks that a
resumed run is the same run (`run.check_resumable`), removes an old run only when asked and only
after every check, writes the run record, trains with checkpoints, and writes the history and
the SAELens export. The two steps are also separate (`claim`, then `Run.prepare` and
`Run.train`) for callers that must do work inside the claimed folder first, such as
`wsae train --model`, which harvests into it.

The layout is defined here and nowhere else; every command, the sweep file and the experiments
name a run's files through these constants:

    run.json        RECORD       the run's identity: configs, γ, data, mesh (`trainer.run_record`)
    W_p.npy         W_P          synthetic data's mixing matrix (for held-out samples)
    checkpoints/    CHECKPOINTS  orbax checkpoints (`storage.checkpoint`)
    history.json    HISTORY      the records, where it diverged, seconds
    sae/            EXPORT       the SAE as a SAELens folder
    eval.json       EVAL         `wsae eval`'s scores, written beside the run
    report.html     REPORT       `wsae report`'s page
    wandb/          WANDB        offline W&B logs
    activations/    HARVESTED    `wsae train --model`'s store: kept by overwrite (costly to redo)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from wsae_jax import _validate as V

RECORD = "run.json"
W_P = "W_p.npy"
CHECKPOINTS = "checkpoints"
HISTORY = "history.json"
EXPORT = "sae"
EVAL = "eval.json"
REPORT = "report.html"
WANDB = "wandb"
HARVESTED = "activations"

RUN_FILES = (RECORD, CHECKPOINTS, HISTORY, EXPORT, W_P, EVAL, REPORT, WANDB)
"""A run folder's own entries (what an overwrite removes)."""


def as_run_folder(path):
  """The `storage.RunFolder` of a run at `path` (its entries, the kept harvest, its marker)."""
  from wsae_jax.storage.run_folder import RunFolder

  return RunFolder(path, entries=RUN_FILES, keep=(HARVESTED,), marker=RECORD)


def run_dir_of(path) -> pathlib.Path:
  """The run folder of `path`, which may name the run or its SAELens export (`sae/`)."""
  path = pathlib.Path(path)
  return path.parent if path.name == EXPORT and (path.parent / RECORD).exists() else path


@dataclasses.dataclass(frozen=True)
class RunData:
  """What a run trains on: a batch source and what the folder records about it.

  `W_p`: the synthetic problem's matrix (written to W_p.npy, so that held-out samples of the
  same problem can be drawn later); `scale` / `standardization`: how the source transformed the
  activations (recorded and folded back into the export)."""

  source: Any
  W_p: Any = None
  scale: float | None = None
  standardization: dict | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
  """When a run saves: every `every` steps, and every `every_minutes` (None: by steps only);
  the newest `keep` are kept."""

  every: int = 500
  keep: int = 3
  every_minutes: float | None = None

  def __post_init__(self):
    V.check_int("checkpoint every", self.every, low=1)
    V.check_int("checkpoints kept", self.keep, low=1)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What `Run.train` / `start_run` return: the folder, the final state and the history."""

  path: pathlib.Path
  state: Any
  history: Any

  @property
  def diverged_at(self) -> int | None:
    return self.history.diverged_at


class Run:
  """A claimed run folder (from `claim`): `prepare` checks a run for it, `train` runs it."""

  def __init__(self, folder, existing, *, resume: bool, overwrite: bool):
    self.folder, self.existing = folder, existing
    self.path: pathlib.Path = folder.path
    self.resume, self.overwrite = resume, overwrite
    self.record: dict | None = None
    self._plan: dict | None = None
    self._begun = False

  def prepare(self, sae_cfg, train_cfg, data: RunData, gamma=None, *, mesh=None) -> dict:
    """Checks the run (a resumed one against the folder's record) and returns its record;
    writes nothing. `gamma`: None (plain SAE), a fixed `(d_in,)` array or a
    `weights.DecoderGamma`."""
    from wsae_jax.training import run as run_lib
    from wsae_jax.training import trainer

    if not isinstance(data, RunData):
      raise TypeError(f"data must be a workdir.RunData (got {type(data).__name__}).")
    record = trainer.run_record(
      sae_cfg,
      train_cfg,
      gamma,
      data.source,
      normalization_scale=data.scale,
      standardization=data.standardization,
      mesh=mesh,
    )
    if self.resume:
      run_lib.check_resumable(self.path / RECORD, record)
    self.record = record
    self._plan = {"cfg": sae_cfg, "tc": train_cfg, "data": data, "gamma": gamma, "mesh": mesh}
    return record

  def begin(self) -> None:
    """Removes an old run (overwrite) and writes the record (and W_p); `train` calls it when
    the caller has not (call it first to put files such as a logger's into the new run)."""
    if self._plan is None or self.record is None:
      raise RuntimeError("a Run needs Run.prepare first.")
    if self._begun:
      return
    if self.overwrite:  # every check has passed: only now is the old run removed
      self.folder.clear(self.existing)
    self.folder.write_json(RECORD, self.record)
    W = self._plan["data"].W_p
    if W is not None:
      self.folder.save_npy(W_P, np.asarray(W, np.float32))
    self._begun = True

  def train(
    self,
    *,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),
    progress: bool | str = True,
    callbacks: Sequence[Callable[[dict], Any]] = (),
  ) -> TrainedRun:
    """`begin`s the run, trains from the newest checkpoint (resume) or afresh, and writes the
    history and the SAELens export.
    `callbacks` get every history record as it is made."""
    import jax

    from wsae_jax.data import sources
    from wsae_jax.storage import saelens
    from wsae_jax.storage.checkpoint import Checkpointer
    from wsae_jax.training import trainer

    self.begin()
    assert self._plan is not None
    p, data = self._plan, self._plan["data"]
    ck = Checkpointer(
      self.path / CHECKPOINTS,
      every=checkpoints.every,
      keep=checkpoints.keep,
      every_minutes=checkpoints.every_minutes,
    )
    on_record = _fanout(callbacks)
    try:
      state, hist = trainer.train(
        p["cfg"],
        p["tc"],
        data.source,
        gamma=p["gamma"],
        mesh=p["mesh"],
        checkpointer=ck,
        resume=self.resume,
        progress=progress,
        normalization_scale=data.scale,
        standardization=data.standardization,
        on_record=on_record,
      )
    finally:
      ck.close()
    self.folder.write_json(
      HISTORY, {"records": hist.records, "diverged_at": hist.diverged_at, "seconds": hist.seconds}
    )
    saelens.save_saelens(
      self.path / EXPORT,
      p["cfg"],
      jax.device_get(state.params),
      normalization_scale=data.scale,
      standardization=data.standardization,
      metadata=saelens.metadata_from_data(sources.describe(data.source)),
    )
    return TrainedRun(self.path, state, hist)


def _fanout(callbacks) -> Callable[[dict], None] | None:
  callbacks = [c for c in callbacks if c is not None]
  if not callbacks:
    return None

  def call(record: dict) -> None:
    for c in callbacks:
      c(record)

  return call


@contextlib.contextmanager
def claim(path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Run]:
  """Locks the run folder at `path` for the block and refuses one that would mix runs (see
  `storage.run_folder`); yields a `Run`. A failed start in a folder this call created leaves
  nothing behind (a harvested store excepted)."""
  folder = as_run_folder(path)
  with folder.claim(resume=resume, overwrite=overwrite) as existing:
    yield Run(folder, existing, resume=resume, overwrite=overwrite)


def start_run(
  path,
  sae_cfg,
  train_cfg,
  data: RunData,
  gamma=None,
  *,
  mesh=None,
  resume: bool = False,
  overwrite: bool = False,
  checkpoints: CheckpointPolicy = CheckpointPolicy(),
  progress: bool | str = True,
  callbacks: Sequence[Callable[[dict], Any]] = (),
) -> TrainedRun:
  """Trains one SAE into the run folder `path` with `wsae train`'s guarantees (see the module
  docstring): claimed, checked, resumable, its record, history and export written."""
  with claim(path, resume=resume, overwrite=overwrite) as run:
    run.prepare(sae_cfg, train_cfg, data, gamma, mesh=mesh)
    return run.train(checkpoints=checkpoints, progress=progress, callbacks=callbacks)


# -- reading a run back --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpenedRun:
  """A run folder read back (`open_run`).

  `record`: run.json (None for a bare SAELens folder); `gamma`: the fixed γ, or a re-estimated
  one's value at the newest checkpoint (None: unweighted); `history`: history.json's content
  (None while the run has not finished); `W_p`: the synthetic problem's matrix, if any.
  `checkpoint_step`: None when `params` come from the export (they act on raw activations: a
  normalisation or standardisation is folded in); else the step of the checkpoint they come
  from, and they act on the activations as the run served them (the record's `data` says how).
  """

  path: pathlib.Path
  sae_config: Any
  params: dict
  record: dict | None
  gamma: np.ndarray | None
  history: dict | None
  W_p: np.ndarray | None
  checkpoint_step: int | None = None

  @property
  def data(self) -> dict:
    return (self.record or {}).get("data", {})

  def held_out(self, num_samples: int = 8192):
    """`(x, x_p)`: `num_samples` held-out features and their observations of a synthetic run's
    own problem (drawn at `problems.HELD_OUT_STEP`, a step no run trains on)."""
    d = self.data
    if d.get("kind") != "synthetic":
      raise V.WSAEInputError(f"{self.path} did not train on synthetic data; pass --activations.")
    if self.W_p is None:
      raise V.WSAEInputError(f"{self.path} has no {W_P}: its problem cannot be sampled again.")
    return _draw_held_out(d, self.W_p, num_samples)

  def trained_on(self, store) -> list[str]:
    """The shards of the activation store `store` this run trained on (same model, layer and
    shard names); [] when it trained on none of them or on synthetic data."""
    d = self.data
    if d.get("kind") != "activations":
      return []
    if (d.get("model"), d.get("layer")) != (
      store.metadata.get("model"),
      store.metadata.get("layer"),
    ):
      return []
    return [s for s in store.shard_names if s in set(d.get("shards", []))]


def read_run_record(path) -> dict:
  """run.json of the run at `path`, or a `WSAEInputError` naming the file."""
  return _read_json(run_dir_of(path) / RECORD)


def _read_json(f: pathlib.Path) -> dict:
  try:
    return json.loads(f.read_text())
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise V.WSAEInputError(f"{f} cannot be read ({e}).") from None


def open_run(path, *, from_checkpoint: bool = False) -> OpenedRun:
  """Reads the run at `path` (its folder or its `sae/`; a bare SAELens folder opens with no
  record): the SAE from the export, or from the newest usable checkpoint when there is no
  export yet or `from_checkpoint`."""
  from wsae_jax.storage import saelens
  from wsae_jax.training import run as run_lib

  run_dir = run_dir_of(path)
  if not (run_dir / RECORD).exists():
    if (run_dir / EXPORT / saelens.CFG_FILENAME).exists():
      run_dir = run_dir / EXPORT
    cfg, params = saelens.load_saelens(run_dir)
    return OpenedRun(run_dir, cfg, params, None, None, None, None)
  record = read_run_record(run_dir)
  meta = None
  params_from_export = not from_checkpoint and (run_dir / EXPORT / saelens.CFG_FILENAME).exists()
  if not params_from_export:
    cfg, params, meta = run_lib.load_params(run_dir / CHECKPOINTS)
  else:
    cfg, params = saelens.load_saelens(run_dir / EXPORT)
  gamma = record.get("gamma")
  if not isinstance(gamma, list) and record.get("gamma_schedule"):
    if meta is None:
      meta = _newest_meta(run_dir / CHECKPOINTS)
    gamma = None if meta is None else meta.get("gamma_current")
  history = _read_json(run_dir / HISTORY) if (run_dir / HISTORY).exists() else None
  return OpenedRun(
    run_dir,
    cfg,
    params,
    record,
    None if not isinstance(gamma, list) else np.asarray(gamma, np.float32),
    history,
    _checked_W_p(run_dir, record),
    None if params_from_export or meta is None else int(meta["step"]),
  )


def _newest_meta(directory) -> dict | None:
  from wsae_jax.storage.checkpoint import Checkpointer

  if not pathlib.Path(directory).is_dir():
    return None
  ck = Checkpointer(directory)
  try:
    steps = ck.steps()
    return ck.read_meta(steps[-1]) if steps else None
  finally:
    ck.close()


def _checked_W_p(run_dir: pathlib.Path, record: dict) -> np.ndarray | None:
  """W_p.npy of a synthetic run, checked against the SHA-1 in its record."""
  d = record.get("data", {})
  if d.get("kind") != "synthetic":
    return None
  path = run_dir / W_P
  if not path.exists():  # older `wsae train` did not write it
    return None
  W = np.load(path)
  if hashlib.sha1(np.ascontiguousarray(W, np.float32).tobytes()).hexdigest() != d.get("W_p_sha1"):
    raise V.WSAEInputError(
      f"{path} is not the W_p this run trained on (its SHA-1 differs from {RECORD}'s); "
      f"restore the run's own file."
    )
  return W


def synthetic_held_out(run_dir, num_samples: int = 8192):
  """`(x, x_p, W_p, gamma)` for a synthetic run: `num_samples` held-out features, their
  observations, the run's W_p (checked against its record) and its fixed γ (None when
  unweighted or re-estimated during training)."""
  run_dir = run_dir_of(run_dir)
  record = read_run_record(run_dir)
  if record.get("data", {}).get("kind") != "synthetic":
    raise V.WSAEInputError(f"{run_dir} did not train on synthetic data; pass --activations.")
  W = _checked_W_p(run_dir, record)
  if W is None:
    raise V.WSAEInputError(
      f"{run_dir} has no {W_P} (older `wsae train` did not write it); retrain the run to "
      f"evaluate it on its own data."
    )
  x, x_p = _draw_held_out(record["data"], W, num_samples)
  gamma = record.get("gamma") if isinstance(record.get("gamma"), list) else None
  return x, x_p, W, None if gamma is None else np.asarray(gamma, np.float32)


def _draw_held_out(data: dict, W_p, num_samples: int):
  """`(x, x_p)` of the synthetic stream a run's record `data` describes, at the held-out step."""
  from wsae_jax.data import problems, sources

  source = sources.SyntheticSource(
    W_p,
    data["sparsity"],
    num_samples,
    seed=data["seed"],
    magnitude=data.get("magnitude", "uniform"),
    rates=data.get("rates"),
    prng_impl=data.get("prng_impl", "threefry2x32"),
  )
  x, x_p = source.sample(problems.HELD_OUT_STEP, num_samples)
  return np.asarray(x), np.asarray(x_p)

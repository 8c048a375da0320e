"""Sweep files (`wsae sweep CONFIG.toml`): read and check one, run it, write its results.

Writes `sweep.json` (the table, histories, diverged members), `sweep.csv` (the table) and
`sweep.png` (the Pareto front), and checkpoints in `checkpoints/`.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from wsae_jax import _validate as V
from wsae_jax import models, parallel
from wsae_jax.app import plots
from wsae_jax.data import problems, store
from wsae_jax.data import superposition as sp
from wsae_jax.evaluation import scoring
from wsae_jax.storage import records
from wsae_jax.storage.checkpoint import Checkpointer
from wsae_jax.storage.run_folder import RunFolder
from wsae_jax.training import gamma as gamma_lib
from wsae_jax.training import sweep
from wsae_jax.training.config import TrainConfig


def write_results(
  res: sweep.SweepResult, rows: list[dict], folder
) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes `sweep.json` (everything) and `sweep.csv` (the table) into `folder`."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  js, cs = folder / "sweep.json", folder / "sweep.csv"
  records.write_json(
    js,
    {
      "sae_config": res.sae_cfg.to_dict(),
      "rows": rows,
      "histories": res.histories,
      "diverged": res.diverged,
      "seconds": res.seconds,
    },
  )
  cols = list(dict.fromkeys(k for r in rows for k in r))
  with cs.open("w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=cols)
    wr.writeheader()
    for r in rows:  # list-valued cells (per-feature metrics) as JSON text
      wr.writerow(
        {
          k: json.dumps(records.clean(v))
          if isinstance(v, (np.ndarray, list))
          else records.jsonable(v)
          for k, v in r.items()
        }
      )
  return js, cs


SWEEP_FILE_DOC = """\
A sweep file is TOML (or the same structure in JSON) with these tables:

  [sae]      architecture = "tied" | "relu" | "topk" | "jumprelu" | "batchtopk" |
             "matryoshka_batchtopk" | "gated", d_sae, and that config's other fields
             (k, l1_coefficient, ...). d_in comes from the data.
  [train]    any TrainConfig field: steps, batch_size, learning_rate, warmup_steps, ...
  [data]     synthetic: geometry = "polygon" (planes, polygon_k, mono) | "random" (n, n_p, seed) |
             "toy" (n, n_p, sparsity, seed); or real: activations = "file.npy" (tokens, d_in);
             or SynthSAEBench: synthbench = "cpu" | "16k" | "a SAELens synthetic model folder"
             (seed = data stream seed), scored by SynthSAEBench's metrics (F1, MCC, ...).
  [grid]     axes to cross, each a list: seed, data_seed, sparsity, alpha, gamma_kind
             ({gamma_kinds}: the kinds of
             `training.gamma.KINDS`), learning_rate, and the
             architecture's own: l1_coefficient (relu, gated), k (topk, batchtopk,
             matryoshka_batchtopk), l0_coefficient (jumprelu).
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
  polygon_k = 3
  mono = 4
  [grid]
  seed = [0, 1, 2]
  sparsity = [0.7, 0.9, 0.99]
  alpha = [0.0, 1.0]
  [output]
  dir = "sweep_out"
""".format(gamma_kinds=" | ".join(gamma_lib.KINDS))


# Each table's fields, checked before anything runs (an unknown key is a typo, not a default).
_FILE_TABLES_REQUIRED = {"sae": dict, "data": dict, "grid": dict}
_FILE_TABLES_OPTIONAL = {"train": dict, "output": dict}
_DATA_FIELDS = {
  "polygon": {"geometry": str, "planes": int, "polygon_k": int, "mono": int, "magnitude": str},
  "random": {"geometry": str, "n": int, "n_p": int, "seed": int, "magnitude": str},
  "toy": {"geometry": str, "n": int, "n_p": int, "sparsity": float, "seed": int, "magnitude": str},
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
  elif "synthbench" in data:
    V.check_fields(f"{path}: [data]", data, {"synthbench": str}, {"seed": int})
  else:
    geometry = data.get("geometry", "polygon")
    if geometry not in _DATA_FIELDS:
      raise V.WSAEInputError(
        f"{path}: [data] geometry must be one of {sorted(_DATA_FIELDS)} (or "
        f'give activations = "file.npy"), got {geometry!r}.'
      )
    V.check_fields(f"{path}: [data] (geometry {geometry!r})", data, {}, _DATA_FIELDS[geometry])
    if data.get("magnitude", "uniform") not in sp.MAGNITUDES:
      raise V.WSAEInputError(
        f"{path}: [data] magnitude must be one of {sp.MAGNITUDES}, got {data['magnitude']!r}."
      )
  V.check_fields(f"{path}: [grid]", spec["grid"], {}, {k: list for k in sweep.member_keys()})
  for axis, values in spec["grid"].items():
    if not values:
      raise V.WSAEInputError(f"{path}: [grid] {axis} is an empty list; give at least one value.")
  V.check_fields(f"{path}: [output]", spec.get("output", {}), {}, _OUTPUT_FIELDS)
  return spec


SYNTHBENCH_MODELS = {"cpu": "SYNTHBENCH_CPU", "16k": "SYNTHBENCH_16K"}


def _synthbench_source(d: dict, where: str, batch_size: int):
  """`[data] synthbench = "cpu" | "16k" | folder`: a named construction or SAELens's saved model."""
  from wsae_jax.data import synthbench as sb

  name = d["synthbench"]
  if name in SYNTHBENCH_MODELS:
    law = sb.build_law(getattr(sb, SYNTHBENCH_MODELS[name]))
  elif pathlib.Path(name).is_dir():
    _, law = sb.load_saelens_model(name)
  else:
    raise V.WSAEInputError(
      f"{where} synthbench must be one of {sorted(SYNTHBENCH_MODELS)} or a folder written by "
      f"SAELens's SyntheticModel.save(), got {name!r}."
    )
  return sb.SynthBenchSource(law, batch_size, seed=d.get("seed", 0), name=name)


def _data_from_spec(d: dict, where: str = "[data]", batch_size: int = 1024):
  d = dict(d)
  if "synthbench" in d:
    return _synthbench_source(d, where, batch_size)
  if "activations" in d:
    _, shards = store.read_metadata(d["activations"])  # missing, rank, dtype: clear errors
    if len(shards) != 1 or not shards[0].path.samefile(d["activations"]):
      raise V.WSAEInputError(
        f"{where} activations must be a (tokens, d_in) .npy file, got the "
        f"store folder {d['activations']!r}."
      )
    return np.load(d["activations"], mmap_mode="r")
  magnitude = d.pop("magnitude", "uniform")
  return problems.SyntheticProblem(problems.build(**d), magnitude=magnitude)


def run_sweep_file(
  path,
  *,
  progress: bool = True,
  echo=print,
  resume: bool = False,
  overwrite: bool = False,
  latent_shards: int = 1,
) -> tuple[sweep.SweepResult, list[dict]]:
  """Runs the sweep a file describes and writes its results; returns the result and its table.

  `latent_shards`: devices that split each member's latents (`sweep.sweep_mesh`); the members are
  split over the rest.

  Checkpoints go to `<output dir>/checkpoints` every `[output] checkpoint_every` steps (default
  1000); `resume=True` continues from the newest complete one. An output folder that already
  holds a sweep is refused unless `resume` (the same sweep) or `overwrite` (its checkpoints and
  results are deleted once every input check has passed).
  """
  spec = load_sweep_file(path)
  train_cfg = V.build_dataclass(TrainConfig, spec.get("train", {}), f"{path}: [train]")
  data = _data_from_spec(spec["data"], f"{path}: [data]", train_cfg.batch_size)
  synthetic = isinstance(data, problems.SyntheticProblem)
  d_in = np.shape(data.W_p)[0] if synthetic else getattr(data, "d_in", None) or np.shape(data)[1]
  sae_spec = dict(spec["sae"])
  arch = sae_spec.pop("architecture", "tied")
  known = models.ARCHITECTURES.get(arch)  # an unknown name is refused below, with the file's name
  for h in known.hyperparameters if known else ():  # e.g. Top-k: compiled for the largest k
    values = spec["grid"].get(h.name, [])
    if (
      h.config_is_max
      and values
      and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
      sae_spec[h.name] = max(values)
  if synthetic and "d_sae" not in sae_spec:
    sae_spec["d_sae"] = np.shape(data.W_p)[1]
  sae_cfg = models.config_from_dict(
    {"architecture": arch, "d_in": d_in, **sae_spec}, f"{path}: [sae]"
  )
  try:
    members = sweep.grid(**{k: list(v) for k, v in spec["grid"].items()})
    sweep.resolve_members(sae_cfg, train_cfg, members, synthetic=synthetic)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{path}: [grid]: {e}") from None
  V.check_int(
    f"{path}: [output] checkpoint_every",
    spec.get("output", {}).get("checkpoint_every", 1000),
    low=1,
  )
  mesh = sweep.sweep_mesh(len(members), latent_shards=latent_shards)
  parallel.check_latent_shards(sae_cfg.d_sae, mesh)
  # One sweep per output folder (locked); other files may sit beside it (a working directory).
  folder = RunFolder(
    spec.get("output", {}).get("dir", "sweep_out"),
    entries=SWEEP_FILES,
    others_ok=True,
    where=f"{path}: [output] dir",
    what="sweep",
  )
  with folder.claim(resume=resume, overwrite=overwrite) as earlier:
    if overwrite:
      folder.clear(earlier)
    return _run_claimed(
      spec,
      folder.path,
      sae_cfg,
      train_cfg,
      members,
      data,
      arch,
      d_in,
      mesh=mesh,
      progress=progress,
      resume=resume,
      echo=echo,
    )


def _run_claimed(
  spec, out, sae_cfg, train_cfg, members, data, arch, d_in, *, mesh, progress, resume, echo
):
  shards = parallel.latent_shard_count(mesh)
  echo(
    f"sweep: {len(members)} members of a {arch} SAE (d_in={d_in}, d_sae={sae_cfg.d_sae}), "
    f"{train_cfg.steps} steps each, on {mesh.devices.size} device(s)"
    + (f", each member's latents split over {shards}" if shards > 1 else "")
  )
  checkpointer = Checkpointer(
    out / "checkpoints", every=spec.get("output", {}).get("checkpoint_every", 1000)
  )
  try:
    res = sweep.train_sweep(
      sae_cfg,
      train_cfg,
      members,
      data,
      progress=progress,
      checkpointer=checkpointer,
      resume=resume,
      mesh=mesh,
    )
  finally:
    checkpointer.close()
  rows = scoring.score_sweep(res, data)
  js, cs = write_results(res, rows, out)
  plots.pareto(rows, out / "sweep.png")
  if res.diverged:
    echo(f"members frozen after a non-finite loss: {res.diverged} (member: step)")
  echo(f"trained in {res.seconds:.1f} s; wrote {js}, {cs} and {out / 'sweep.png'}")
  return res, rows

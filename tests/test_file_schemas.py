"""Every file the library reads is checked against its schema: a damaged or mistyped file is a
`WSAEInputError` naming the file and the field, never a raw traceback or a silent misreading
(issue #16)."""

import json
import struct

import numpy as np
import pytest
from test_sae import _random_params

import wsae_jax as w
from wsae_jax.app import cli, sweep_file
from wsae_jax.data.store import ActivationStore, ActivationWriter, read_metadata
from wsae_jax.lm import rdata
from wsae_jax.storage import checkpoint
from wsae_jax.storage import saelens as io
from wsae_jax.training import run

CFG = w.ReLUSAEConfig(d_in=6, d_sae=10)


# -- SAELens folders -------------------------------------------------------------------------------


@pytest.fixture
def saelens_dir(tmp_path):
  return io.save_saelens(tmp_path / "sae", CFG, _random_params(CFG))


def _edit_cfg(folder, **changes):
  c = json.loads((folder / "cfg.json").read_text())
  for k, v in changes.items():
    if v is None:
      c.pop(k, None)
    else:
      c[k] = v
  (folder / "cfg.json").write_text(json.dumps(c))


def _edit_weights(folder, **changes):
  from safetensors.numpy import load_file, save_file

  wts = load_file(str(folder / "sae_weights.safetensors"))
  wts.update(changes)
  save_file(wts, str(folder / "sae_weights.safetensors"))


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda f: _edit_cfg(f, d_in=None), "cfg.json: the required field 'd_in' is missing"),
    (lambda f: _edit_cfg(f, d_sae="10"), "cfg.json: field 'd_sae' must be an integer, got '10'"),
    (
      lambda f: _edit_cfg(f, apply_b_dec_to_input="yes"),
      "field 'apply_b_dec_to_input' must be true",
    ),
    (lambda f: _edit_cfg(f, architecture="topk", k=None), "needs the field 'k'"),
    (
      lambda f: _edit_cfg(f, wsae_jax={"config": {"architecture": "relu", "d_in": 7, "d_sae": 10}}),
      "wsae_jax.config.d_in = 7 contradicts d_in = 6",
    ),
    (
      lambda f: _edit_cfg(
        f, wsae_jax={"config": {"architecture": "relu", "d_in": 6, "d_sae": 10, "l1_coef": 1.0}}
      ),
      "unknown field 'l1_coef'; allowed fields: d_in, d_sae, dtype, init_decoder_norm, l1_coefficient",
    ),
    (
      lambda f: _edit_cfg(f, d_in=5),
      r"W_enc has shape \(6, 10\), but cfg.json \(d_in=5, d_sae=10\)",
    ),
    (
      lambda f: _edit_weights(f, b_dec=np.zeros(1, np.float32)),
      r"b_dec has shape \(1,\).*requires \(6,\)",
    ),
    (
      lambda f: _edit_weights(f, b_enc=np.zeros(9, np.float32)),
      r"b_enc has shape \(9,\).*requires \(10,\)",
    ),
    (
      lambda f: _edit_weights(f, W_dec=np.full((10, 6), np.nan, np.float32)),
      r"W_dec holds 60 non-finite value\(s\)",
    ),
    (
      lambda f: (f / "sae_weights.safetensors").write_bytes(
        (f / "sae_weights.safetensors").read_bytes()[:100]
      ),
      "sae_weights.safetensors cannot be read",
    ),
    (
      lambda f: (f / "sae_weights.safetensors").write_bytes(b"\x00garbage" * 50),
      "sae_weights.safetensors cannot be read",
    ),
    (lambda f: (f / "cfg.json").write_text("[1, 2]"), "cfg.json must be a table"),
  ],
  ids=[
    "no-d_in",
    "d_sae-str",
    "bool-field",
    "topk-no-k",
    "d_in-contradicts",
    "unknown-ours",
    "d_in-vs-weights",
    "b_dec-(1,)",
    "b_enc-length",
    "nan-weights",
    "truncated",
    "garbage",
    "cfg-list",
  ],
)
def test_bad_saelens_folders_name_the_file_and_field(saelens_dir, edit, match):
  edit(saelens_dir)
  with pytest.raises(w.WSAEInputError, match=match):
    io.load_saelens(saelens_dir)


def test_saelens_fields_of_other_tools_are_accepted(saelens_dir):
  """cfg.json from SAELens carries many fields we do not read (hook names, dtype, device …)."""
  _edit_cfg(
    saelens_dir,
    hook_name="blocks.3.hook_resid_post",
    model_from_pretrained_kwargs={},
    wsae_jax=None,
  )
  cfg, p = io.load_saelens(saelens_dir)
  assert cfg == w.ReLUSAEConfig(d_in=6, d_sae=10) and p["b_dec"].shape == (6,)


# -- activation stores -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
  rng = np.random.default_rng(0)
  writer = ActivationWriter(tmp_path / "store", d_in=4, dtype="float32", context_len=8)
  for i in range(3):
    writer.write_shard(i, rng.standard_normal((16, 4)))
  return tmp_path / "store"


def _edit_meta(store, fn):
  m = json.loads((store / "metadata.json").read_text())
  fn(m)
  (store / "metadata.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
  "fn, match",
  [
    (lambda m: m.pop("d_in"), "the required field 'd_in' is missing"),
    (lambda m: m.update(d_in="4"), "field 'd_in' must be an integer"),
    (lambda m: m.update(context_len=8.5), "field 'context_len' must be an integer or null"),
    (lambda m: m["shards"][1].pop("n_tokens"), r"shards\[1\]: the required field 'n_tokens'"),
    (
      lambda m: m["shards"][0].update(n_tokens="16"),
      r"shards\[0\]: field 'n_tokens' must be an integer",
    ),
    (lambda m: m["shards"][0].update(rows=16), r"shards\[0\]: unknown field 'rows'"),
    (lambda m: m.update(shards="acts_00000.npy"), "field 'shards' must be a list"),
    (
      lambda m: m["shards"].append(dict(m["shards"][0])),
      r"shards\[3\]: shard 'acts_00000.npy' is "
      r"already listed as shards\[0\]",
    ),
    (lambda m: m["shards"][2].update(file="../outside.npy"), "points outside the store folder"),
    (lambda m: m["shards"][2].update(file="/etc/passwd"), "points outside the store folder"),
    (lambda m: m.update(n_tokens=999), "'n_tokens' is 999 but the shards list 48 rows"),
  ],
  ids=[
    "no-d_in",
    "d_in-str",
    "ctx-float",
    "shard-no-n",
    "shard-n-str",
    "shard-unknown",
    "shards-str",
    "duplicate",
    "dotdot",
    "absolute",
    "stale-total",
  ],
)
def test_bad_store_metadata_names_the_file_and_field(store, fn, match):
  np.save(store.parent / "outside.npy", np.zeros((16, 4), np.float32))
  _edit_meta(store, fn)
  with pytest.raises(w.WSAEInputError, match=match) as e:
    ActivationStore(store, 8)
  assert "metadata.json" in str(e.value)


def test_store_provenance_fields_are_kept(store):
  _edit_meta(store, lambda m: m.update(model="m", layer=3, tokens_per_second=12.5))
  meta, shards = read_metadata(store)
  assert meta["model"] == "m" and len(shards) == 3


# -- sweep files -----------------------------------------------------------------------------------

GOOD = {
  "sae": {"architecture": "tied"},
  "train": {"steps": 4, "batch_size": 32},
  "data": {"geometry": "polygon", "planes": 2, "polygon_k": 3, "mono": 2},
  "grid": {"sparsity": [0.9]},
}


def _sweep_file(tmp_path, spec, suffix=".json"):
  path = tmp_path / f"s{suffix}"
  if isinstance(spec, dict):
    spec = {**spec, "output": {"dir": str(tmp_path / "out"), **spec.get("output", {})}}
  path.write_text(json.dumps(spec))
  return path


def _with(table, **fields):
  return {**GOOD, table: {**GOOD.get(table, {}), **fields}}


@pytest.mark.parametrize(
  "spec, match",
  [
    (
      _with("sae", d_sea=8),
      r"\[sae\]: tied SAE config: unknown field 'd_sea'; allowed fields: "
      "d_in, d_sae, dtype",
    ),
    (_with("sae", d_sae="8"), r"\[sae\]: tied SAE config: field 'd_sae' must be an integer"),
    (_with("sae", d_in=8), r"\[sae\] must not set 'd_in'"),
    (_with("grid", sparsity=0.9), r"\[grid\]: field 'sparsity' must be a list, got 0.9"),
    (_with("grid", alpah=[1.0]), r"\[grid\]: unknown field 'alpah'"),
    (_with("grid", seed=[]), r"\[grid\] seed is an empty list"),
    (
      _with("data", plane=3),
      r"\[data\] \(geometry 'polygon'\): unknown field 'plane'; allowed fields: "
      "geometry, magnitude, mono, planes, polygon_k",
    ),
    (
      _with("data", geometry="toy", planes=3),
      r"\[data\] \(geometry 'toy'\): unknown field 'planes'",
    ),
    (_with("data", magnitude="gaussian"), r"\[data\] magnitude must be one of"),
    (
      _with("output", dri="x"),
      r"\[output\]: unknown field 'dri'; allowed fields: checkpoint_every, dir",
    ),
    (
      _with("output", checkpoint_every="10"),
      r"\[output\]: field 'checkpoint_every' must be an integer",
    ),
    (
      _with("train", step=4),
      r"\[train\]: unknown field 'step'; allowed fields: b1, b2, b_dec_init, batch_size",
    ),
    (_with("train", learning_rate=-1.0), r"\[train\]: learning_rate must lie in"),
    ([GOOD], r"s.json must be a table \(a JSON object / TOML table\), got list"),
    ({**GOOD, "sae": "tied"}, r"field 'sae' must be a table, got 'tied'"),
  ],
  ids=[
    "sae-unknown",
    "sae-type",
    "sae-d_in",
    "grid-scalar",
    "grid-unknown",
    "grid-empty",
    "data-typo",
    "data-other-geometry",
    "data-magnitude",
    "output-typo",
    "output-type",
    "train-unknown",
    "train-range",
    "json-list",
    "table-scalar",
  ],
)
def test_bad_sweep_files_name_the_table_and_field(tmp_path, capsys, spec, match):
  path = _sweep_file(tmp_path, spec)
  with pytest.raises(w.WSAEInputError, match=match):
    sweep_file.run_sweep_file(path, progress=False, echo=lambda *a: None)
  assert cli.main(["sweep", str(path), "--no-progress"]) == 2
  assert "wsae sweep: error:" in capsys.readouterr().err
  assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda d: d / "missing.npy", "does not exist"),
    (lambda d: np.save(d / "r1.npy", np.ones(64, np.float32)) or d / "r1.npy", "must have rank 2"),
    (lambda d: np.save(d / "i.npy", np.ones((64, 4), np.int64)) or d / "i.npy", "floating-point"),
  ],
)
def test_sweep_activation_files_are_checked(tmp_path, make, match):
  path = make(tmp_path)
  spec = {**GOOD, "data": {"activations": str(path)}, "grid": {"seed": [0]}}
  with pytest.raises(w.WSAEInputError, match=match):
    sweep_file.run_sweep_file(_sweep_file(tmp_path, spec), progress=False, echo=lambda *a: None)


def test_a_good_sweep_file_still_runs(tmp_path):
  _, rows = sweep_file.run_sweep_file(
    _sweep_file(tmp_path, GOOD), progress=False, echo=lambda *a: None
  )
  assert len(rows) == 1 and (tmp_path / "out" / "sweep.json").exists()


# -- checkpoint records ----------------------------------------------------------------------------


def _trained_run(tmp_path):
  out = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(out),
        "--steps",
        "10",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "5",
        "--no-progress",
      ]
    )
    == 0
  )
  return out


def _edit_record(out, step, fn):
  f = out / "checkpoints" / str(step) / "meta" / "metadata"
  m = json.loads(f.read_text())
  fn(m)
  f.write_text(json.dumps(m))


@pytest.mark.parametrize(
  "fn, match",
  [
    (lambda m: m.update(comment="hi"), "unknown field 'comment'"),
    (lambda m: m["train_config"].update(momentum=0.9), r"train_config: unknown field 'momentum'"),
    (lambda m: m["sae_config"].update(d_sae="28"), r"sae_config: field 'd_sae' must be an integer"),
    (lambda m: m.pop("step"), "the required field 'step' is missing"),
  ],
  ids=["top-unknown", "train-unknown", "sae-type", "no-step"],
)
def test_bad_checkpoint_records_are_named_by_export(tmp_path, capsys, fn, match):
  out = _trained_run(tmp_path)
  for step in (5, 10):
    _edit_record(out, step, fn)
  assert cli.main(["export", str(out), "--out", str(tmp_path / "exp")]) == 2
  err = capsys.readouterr().err
  assert "no usable checkpoint" in err
  import re

  assert re.search(match, err), err
  assert str(out / "checkpoints" / "10" / "meta" / "metadata") in err


def test_a_bad_newest_record_falls_back_and_a_resume_never_restarts_from_zero(tmp_path, capsys):
  out = _trained_run(tmp_path)
  _edit_record(out, 10, lambda m: m.update(comment="hi"))
  with pytest.warns(RuntimeWarning, match="skipping checkpoint"):
    _, _, meta = run.load_params(out / "checkpoints")
  assert meta["step"] == 5
  # When no checkpoint is usable, resuming is refused instead of training from step 0 over them.
  _edit_record(out, 5, lambda m: m.update(comment="hi"))
  (out / "run.json").unlink()  # an older run folder: only the checkpoints' records remain
  with pytest.warns(RuntimeWarning):
    rc = cli.main(
      [
        "train",
        "--out",
        str(out),
        "--steps",
        "10",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "5",
        "--no-progress",
        "--resume",
      ]
    )
  assert rc == 2
  assert "none of the 2 checkpoint(s)" in capsys.readouterr().err
  assert checkpoint.Checkpointer(out / "checkpoints").steps() == [5, 10]


# -- R data ------------------------------------------------------------------------------------------


def test_deeply_nested_r_objects_are_refused_not_a_recursion_error():
  vecsxp, nil = 19, 254
  deep = (
    b"X\n"
    + struct.pack(">iii", 2, 0, 0)
    + struct.pack(">ii", vecsxp, 1) * 5000
    + struct.pack(">i", nil)
  )
  with pytest.raises(rdata.RDataError, match=r"deep.rds: objects nested more than 200 levels"):
    rdata.unserialize(deep, "deep.rds")
  shallow = (
    b"X\n"
    + struct.pack(">iii", 2, 0, 0)
    + struct.pack(">ii", vecsxp, 1) * 50
    + struct.pack(">i", nil)
  )
  obj = rdata.unserialize(shallow, "ok.rds")
  for _ in range(49):
    obj = obj.value[0]
  assert obj.value == [None]


def test_records_from_before_descriptive_data_fields_stay_resumable():
  """`context_len` and `corpus` were added to a store's data description for the SAELens
  metadata of exports: a record without them still resumes, a different stream does not."""
  from wsae_jax.training import run as run_lib

  old = {"sae_config": {}, "train_config": {}, "data": {"kind": "activations", "seed": 0}}
  new = {
    "sae_config": {},
    "train_config": {"compute_dtype": "float32"},
    "data": {"kind": "activations", "seed": 0, "context_len": 256, "corpus": "janeaustenr"},
  }
  run_lib.check_compatible(old, new, "here")
  with pytest.raises(run_lib.IncompatibleRunError, match="data.seed"):
    run_lib.check_compatible(old, {**new, "data": {**new["data"], "seed": 1}}, "here")

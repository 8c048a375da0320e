"""A run as a library object (`training.workdir`): what `wsae train` guarantees, from a notebook."""

import json

import numpy as np
import pytest

import wsae_jax as w
from wsae_jax import _validate as V
from wsae_jax import models, parallel
from wsae_jax.app import cli
from wsae_jax.data import sources
from wsae_jax.training import workdir
from wsae_jax.training.config import TrainConfig
from wsae_jax.training.run import IncompatibleRunError

TC = TrainConfig(steps=20, batch_size=64, learning_rate=3e-3, warmup_steps=2, log_every=5)


def _data(seed=0):
  W = w.polygon_matrix(6, 3, n_mono=2).astype(np.float32)
  return workdir.RunData(sources.SyntheticSource(W, 0.8, TC.batch_size, seed=seed), W_p=W)


def _cfg(W):
  return models.make_config("topk", d_in=W.shape[0], d_sae=16, k=3)


def _params_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_start_run_writes_the_layout_and_open_run_reads_it_back(tmp_path):
  data = _data()
  cfg = _cfg(data.W_p)
  gamma = np.linspace(0.5, 1.5, data.W_p.shape[0]).astype(np.float32)
  done = workdir.start_run(tmp_path / "run", cfg, TC, data, gamma, progress=False)
  names = {p.name for p in (tmp_path / "run").iterdir()} - {".wsae.lock"}
  assert names >= {workdir.RECORD, workdir.W_P, workdir.CHECKPOINTS, workdir.HISTORY, "sae"}
  assert names <= set(workdir.RUN_FILES) | {".wsae.lock"}
  opened = workdir.open_run(tmp_path / "run")
  assert opened.checkpoint_step is None and opened.sae_config == cfg
  # No input transform: the export holds the trained parameters themselves.
  _params_equal(opened.params, done.state.params)
  assert opened.record == json.loads((tmp_path / "run" / workdir.RECORD).read_text())
  np.testing.assert_array_equal(opened.gamma, gamma)
  np.testing.assert_array_equal(opened.W_p, data.W_p)
  assert [r["step"] for r in opened.history["records"]] == [r["step"] for r in done.history.records]
  # The sae/ path opens the same run; the newest checkpoint holds the same parameters.
  assert workdir.open_run(tmp_path / "run" / "sae").path == tmp_path / "run"
  ck = workdir.open_run(tmp_path / "run", from_checkpoint=True)
  assert ck.checkpoint_step == TC.steps
  _params_equal(ck.params, done.state.params)
  # Held-out samples of the run's own problem: the source's draw at the held-out step.
  x, x_p = opened.held_out(256)
  ref = sources.SyntheticSource(data.W_p, 0.8, 256, seed=0).sample(
    w.data.problems.HELD_OUT_STEP, 256
  )
  np.testing.assert_array_equal(x_p, np.asarray(ref[1]))
  np.testing.assert_array_equal(x, np.asarray(ref[0]))


class _Stop(Exception):
  pass


def _stop_at(step):
  def callback(record):
    if record["step"] == step:
      raise _Stop

  return callback


def test_a_resumed_start_run_ends_as_an_uninterrupted_one_and_other_settings_are_refused(
  tmp_path,
):
  data = _data()
  cfg = _cfg(data.W_p)
  policy = workdir.CheckpointPolicy(every=10)
  ref = workdir.start_run(tmp_path / "ref", cfg, TC, data, checkpoints=policy, progress=False)
  seen = []
  with pytest.raises(_Stop):  # stopped at step 15, after the checkpoint of step 10
    workdir.start_run(
      tmp_path / "run",
      cfg,
      TC,
      _data(),
      checkpoints=policy,
      progress=False,
      callbacks=[seen.append, _stop_at(15)],
    )
  assert [r["step"] for r in seen] == [5, 10, 15]
  with pytest.raises(V.WSAEInputError, match="already holds a run"):
    workdir.start_run(tmp_path / "run", cfg, TC, _data(), progress=False)
  other = TrainConfig(**{**TC.__dict__, "learning_rate": 1e-3})
  with pytest.raises(IncompatibleRunError):  # another run's settings: refused, nothing touched
    workdir.start_run(tmp_path / "run", cfg, other, _data(), resume=True, progress=False)
  run = workdir.start_run(
    tmp_path / "run", cfg, TC, _data(), checkpoints=policy, resume=True, progress=False
  )
  _params_equal(run.state.params, ref.state.params)


def test_wsae_train_is_start_run_with_the_settings_its_record_names(tmp_path):
  """The run record describes the run completely: rebuilt from run.json and W_p.npy alone, a
  library `start_run` ends with the CLI run's exported parameters, bit for bit."""
  out = tmp_path / "cli"
  args = ["train", "--out", str(out), "--no-progress", "--arch", "topk", "--k", "3"]
  args += ["--d-sae", "16", "--steps", "20", "--batch-size", "64", "--alpha", "1"]
  assert cli.main(args) == 0
  record = json.loads((out / workdir.RECORD).read_text())
  cfg = models.config_from_dict(record["sae_config"], "run.json")
  tc = V.build_dataclass(TrainConfig, record["train_config"], "run.json")
  d = record["data"]
  W = np.load(out / workdir.W_P)
  source = sources.SyntheticSource(W, d["sparsity"], d["batch_size"], seed=d["seed"])
  lib = workdir.start_run(
    tmp_path / "lib",
    cfg,
    tc,
    workdir.RunData(source, W_p=W),
    np.asarray(record["gamma"], np.float32),
    mesh=parallel.training_mesh(record["mesh"]["latent"]),
    progress=False,
  )
  assert json.loads((tmp_path / "lib" / workdir.RECORD).read_text()) == record
  _params_equal(workdir.open_run(out).params, lib.state.params)


def test_a_claimed_run_must_be_prepared_and_data_must_be_run_data(tmp_path):
  data = _data()
  with pytest.raises(RuntimeError, match="prepare"):
    with workdir.claim(tmp_path / "run") as run:
      run.train(progress=False)
  with pytest.raises(TypeError, match="RunData"):
    with workdir.claim(tmp_path / "run") as run:
      run.prepare(_cfg(data.W_p), TC, data.source)
  assert not (tmp_path / "run").exists()  # a failed start leaves nothing behind
  with pytest.raises(V.WSAEInputError, match="checkpoint every"):
    workdir.CheckpointPolicy(every=0)

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import assert_close, relu_train_options

import wsae_jax as w
from wsae_jax.storage import checkpoint
from wsae_jax.storage import saelens as io
from wsae_jax.training import run
from wsae_jax.training import state as state_lib
from wsae_jax.training import trainer as train_lib

W_P = w.polygon_matrix(3, 3, n_mono=2)
CFG = w.TopKSAEConfig(d_in=8, d_sae=16, k=3, dead_after_tokens=128)
TC = w.TrainConfig(steps=30, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)


def _src():
  return w.SyntheticSource(W_P, 0.8, 64, seed=0)


def test_resume_in_process_is_bit_identical(tmp_path):
  full, _ = train_lib.train(CFG, TC, _src(), progress=False)
  ck = checkpoint.Checkpointer(tmp_path, every=10, keep=2)
  short = w.TrainConfig(**{**TC.__dict__, "steps": 30})
  # Run to step 20 only by interrupting: train a run whose checkpoints stop at 20.
  state, _ = train_lib.train(CFG, TC, _src(), progress=False, checkpointer=ck)
  assert ck.steps() == [20, 30]  # keep=2
  # Drop the final checkpoint: resuming must start from 20 and land on the same parameters.
  import shutil

  shutil.rmtree(ck.path(30))
  ck2 = checkpoint.Checkpointer(tmp_path, every=10, keep=2)
  resumed, _ = train_lib.train(CFG, short, _src(), progress=False, checkpointer=ck2, resume=True)
  assert int(resumed.step) == 30
  assert_close(jax.device_get(resumed.params), jax.device_get(full.params), rtol=0, atol=0)
  assert_close(jax.device_get(resumed.opt_state), jax.device_get(full.opt_state), rtol=0, atol=0)
  assert np.array_equal(np.asarray(resumed.tokens_since_fired), np.asarray(full.tokens_since_fired))


def _corrupt(step_dir: pathlib.Path):
  """Truncates every array data file of a checkpoint (what a full disk or a bad copy leaves)."""
  hit = 0
  for f in step_dir.rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
      hit += 1
  assert hit, f"no data files under {step_dir}"


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path, every=10, keep=3)
  full, _ = train_lib.train(CFG, TC, _src(), progress=False, checkpointer=ck)
  _corrupt(ck.path(30))
  target = state_lib.init_state(CFG, TC)
  with pytest.raises(checkpoint.CheckpointError, match=str(ck.path(30))):
    ck.restore(30, target)
  with pytest.warns(RuntimeWarning, match=f"{ck.path(30)}.*Falling back"):
    state, meta = run.restore_latest(ck, target)
  assert meta["step"] == 20 and int(state.step) == 20
  # Resuming from the fallback reproduces the run.
  with pytest.warns(RuntimeWarning, match="Falling back"):
    resumed, _ = train_lib.train(
      CFG,
      TC,
      _src(),
      progress=False,
      resume=True,
      checkpointer=checkpoint.Checkpointer(tmp_path, every=10, keep=3),
    )
  assert_close(jax.device_get(resumed.params), jax.device_get(full.params), rtol=0, atol=0)


def test_resuming_with_another_config_is_refused(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path, every=10)
  train_lib.train(CFG, TC, _src(), progress=False, checkpointer=ck)
  other = w.TrainConfig(**{**TC.__dict__, "learning_rate": 1e-2})
  with pytest.raises(checkpoint.CheckpointError, match="train_config.learning_rate"):
    train_lib.train(CFG, other, _src(), progress=False, checkpointer=ck, resume=True)
  with pytest.raises(checkpoint.CheckpointError, match="data.sparsity"):
    train_lib.train(
      CFG, TC, w.SyntheticSource(W_P, 0.9, 64, seed=0), progress=False, checkpointer=ck, resume=True
    )


def _run_cli(out, *extra, wait=True):
  cmd = [
    sys.executable,
    "-m",
    "wsae_jax",
    "train",
    *relu_train_options(out, steps=1500),
    "--keep",
    "2",
    *extra,
  ]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if wait:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
  ref = _run_cli(tmp_path / "ref")
  assert ref.returncode == 0, ref.stderr[-2000:]
  proc = _run_cli(tmp_path / "killed", wait=False)
  ck_dir = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline:
    # Only finished checkpoints have plain numeric names; orbax writes into "N.orbax-...-tmp".
    steps = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()] if ck_dir.exists() else []
    if steps and max(steps) >= 300:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed; make it longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = checkpoint.Checkpointer(ck_dir).steps()
  assert max(done) < 1500
  resumed = _run_cli(tmp_path / "killed", "--resume")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  _, p_ref = io.load_saelens(tmp_path / "ref" / "sae")
  _, p_res = io.load_saelens(tmp_path / "killed" / "sae")
  for k in p_ref:  # bit-identical on CPU: same program, same batches (a function of seed, step)
    assert np.array_equal(p_ref[k], p_res[k]), k


def test_sweep_resumes_exactly(tmp_path):
  import shutil

  from wsae_jax.data import problems
  from wsae_jax.training import sweep

  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  tc = w.TrainConfig(steps=60, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=20)
  members = sweep.grid(seed=[0, 1], sparsity=[0.8, 0.9], alpha=[0.0, 1.0])
  problem = problems.SyntheticProblem(W_P)
  full = sweep.train_sweep(cfg, tc, members, problem, progress=False)
  ck = checkpoint.Checkpointer(tmp_path, every=20, keep=3)
  sweep.train_sweep(cfg, tc, members, problem, progress=False, checkpointer=ck)
  assert ck.steps() == [20, 40, 60]
  shutil.rmtree(ck.path(60))
  shutil.rmtree(ck.path(40))  # as if killed between the checkpoints of 20 and 40
  resumed = sweep.train_sweep(
    cfg,
    tc,
    members,
    problem,
    progress=False,
    resume=True,
    checkpointer=checkpoint.Checkpointer(tmp_path, every=20, keep=3),
  )
  assert_close(
    jax.device_get(resumed.states.params), jax.device_get(full.states.params), rtol=0, atol=0
  )
  assert [len(h) for h in resumed.histories] == [len(h) for h in full.histories]
  with pytest.raises(checkpoint.CheckpointError, match="data.members"):
    sweep.train_sweep(
      cfg,
      tc,
      members[:-1] + [dict(members[-1], seed=7)],
      problem,
      progress=False,
      resume=True,
      checkpointer=checkpoint.Checkpointer(tmp_path),
    )


def test_a_record_from_before_compute_dtype_is_compatible():
  """Checkpoints written before `compute_dtype` existed were float32 runs: they resume."""
  import dataclasses as dc

  from wsae_jax.training import run as run_lib

  cfg = w.ReLUSAEConfig(d_in=4, d_sae=8)
  meta = run_lib.run_meta(cfg, w.TrainConfig(steps=10))
  old = {
    **meta,
    "train_config": {k: v for k, v in meta["train_config"].items() if k != "compute_dtype"},
  }
  run_lib.check_compatible(old, meta, "old run")
  bf16 = run_lib.run_meta(cfg, dc.replace(w.TrainConfig(steps=10), compute_dtype="bfloat16"))
  with pytest.raises(run_lib.IncompatibleRunError, match="compute_dtype"):
    run_lib.check_compatible(old, bf16, "old run")

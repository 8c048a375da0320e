"""Preemption loses nothing (issue 39): SIGTERM and Ctrl-C finish the step in flight, save it,
exit with 128 + signal and one line naming the `--resume` command; resuming ends bit-identical to
an uninterrupted run. Real processes start with default signal dispositions (a process started
from a background shell job inherits SIGINT as ignored, and would prove nothing) and are signalled
once a condition holds (a checkpoint on disk), never after a sleep."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import assert_close, relu_train_options

import wsae_jax as w
from wsae_jax.app import cli
from wsae_jax.storage import checkpoint
from wsae_jax.storage import saelens as io
from wsae_jax.training import preemption
from wsae_jax.training import trainer as train_lib

W_P = w.polygon_matrix(3, 3, n_mono=2)
TC = w.TrainConfig(steps=60, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
CFG = w.TopKSAEConfig(d_in=8, d_sae=16, k=3, dead_after_tokens=256)


def _source():
  return w.SyntheticSource(W_P, 0.8, 64, seed=0)


def _signal_at(step, signum=signal.SIGINT):
  """An `on_record` callback that signals this process when the record of `step` is made: the
  signal arrives mid-run, at a known step, without any timing."""

  def on_record(rec):
    if rec["step"] == step:
      os.kill(os.getpid(), signum)

  return on_record


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_saves_the_step_reached_raises_and_resumes_exactly(tmp_path, signum):
  before = signal.getsignal(signum)
  full, _ = train_lib.train(CFG, TC, _source(), progress=False)
  ck = checkpoint.Checkpointer(tmp_path, every=1000)
  with pytest.raises(preemption.Interrupted) as e:
    train_lib.train(
      CFG, TC, _source(), progress=False, checkpointer=ck, on_record=_signal_at(20, signum)
    )
  assert (e.value.step, e.value.signum, e.value.saved) == (20, signum, True)
  assert e.value.exit_status == 128 + signum
  assert int(e.value.state.step) == 20 and e.value.history.records[-1]["step"] == 20
  assert ck.steps() == [20]  # no periodic checkpoint was due: this one is the signal's
  assert signal.getsignal(signum) is before  # the caller's handler is back
  resumed, hist = train_lib.train(
    CFG, TC, _source(), progress=False, resume=True, checkpointer=checkpoint.Checkpointer(tmp_path)
  )
  assert_close(jax.device_get(resumed.params), jax.device_get(full.params), rtol=0, atol=0)
  assert hist.records[0]["step"] == 30


def test_without_a_checkpointer_the_state_comes_back_in_the_exception():
  with pytest.raises(preemption.Interrupted, match="nothing saved") as e:
    train_lib.train(CFG, TC, _source(), progress=False, on_record=_signal_at(30))
  assert not e.value.saved and int(e.value.state.step) == 30


def test_a_second_signal_during_the_save_lets_it_complete(tmp_path, monkeypatch):
  ck = checkpoint.Checkpointer(tmp_path, every=1000)
  real_save = ck.save

  def save_while_signalled(step, state, meta):
    os.kill(os.getpid(), signal.SIGTERM)  # the scheduler insists while we save
    real_save(step, state, meta)

  monkeypatch.setattr(ck, "save", save_while_signalled)
  with pytest.raises(preemption.Interrupted) as e:
    train_lib.train(CFG, TC, _source(), progress=False, checkpointer=ck, on_record=_signal_at(20))
  assert e.value.signum == signal.SIGINT and e.value.step == 20
  restored, meta = checkpoint.Checkpointer(tmp_path).restore(20, e.value.state)
  assert meta["step"] == 20
  assert_close(jax.device_get(restored.params), jax.device_get(e.value.state.params), 0, 0)


def test_a_third_signal_exits_at_once():
  code = (
    "import os, signal, time\n"
    "from wsae_jax.training import preemption\n"
    "with preemption.deferred() as stop:\n"
    "  for _ in range(3):\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "  time.sleep(60)\n"
    "print('not reached')\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 143 and "not reached" not in out.stdout


def test_sweep_stops_at_a_call_boundary_and_resumes_exactly(tmp_path, monkeypatch):
  from wsae_jax.data import problems
  from wsae_jax.training import sweep

  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  tc = w.TrainConfig(steps=60, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=20)
  members = sweep.grid(seed=[0, 1], sparsity=[0.8, 0.9])
  problem = problems.SyntheticProblem(W_P)
  full = sweep.train_sweep(cfg, tc, members, problem, progress=False)
  record = sweep._record_call

  def record_then_signal(histories, met, div, done, bar):
    record(histories, met, div, done, bar)
    if done == 20:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(sweep, "_record_call", record_then_signal)
  with pytest.raises(preemption.Interrupted) as e:
    sweep.train_sweep(
      cfg, tc, members, problem, progress=False, checkpointer=checkpoint.Checkpointer(tmp_path)
    )
  assert e.value.step == 20 and checkpoint.Checkpointer(tmp_path).steps() == [20]
  monkeypatch.setattr(sweep, "_record_call", record)
  resumed = sweep.train_sweep(
    cfg,
    tc,
    members,
    problem,
    progress=False,
    resume=True,
    checkpointer=checkpoint.Checkpointer(tmp_path),
  )
  assert_close(
    jax.device_get(resumed.states.params), jax.device_get(full.states.params), rtol=0, atol=0
  )


def test_time_based_checkpoints(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path, every=1000, keep=100, every_minutes=1e-9)
  tc = w.TrainConfig(steps=6, batch_size=64, log_every=3)
  train_lib.train(CFG, tc, _source(), progress=False, checkpointer=ck)
  assert ck.steps() == [1, 2, 3, 4, 5, 6]  # every step is "minutes" after the last save
  ck = checkpoint.Checkpointer(tmp_path / "b", every=4, every_minutes=60)
  train_lib.train(CFG, tc, _source(), progress=False, checkpointer=ck)
  assert ck.steps() == [4, 6]  # an hour never passes: the steps rule and the end alone
  with pytest.raises(w.WSAEInputError, match="every_minutes"):
    checkpoint.Checkpointer(tmp_path / "c", every_minutes=0)


def test_harvest_keeps_only_complete_shards_and_resumes_to_the_same_bytes(
  tiny_lm_store, tmp_path, monkeypatch
):
  import transformers

  from wsae_jax.lm import harvest as hv

  model_dir, reference = tiny_lm_store  # 6 shards of 8 contexts, written uninterrupted
  model = transformers.LlamaForCausalLM.from_pretrained(model_dir).eval()
  ids = np.random.default_rng(0).integers(0, 64, (48, 16)).astype(np.int32)
  calls = []
  real = hv.hook_activations  # the harvest's one forward pass per batch

  def signalled_in_shard_two(*a, **k):
    calls.append(1)
    if len(calls) == 2:  # inside the second shard's forward pass
      os.kill(os.getpid(), signal.SIGTERM)
    return real(*a, **k)

  monkeypatch.setattr(hv, "hook_activations", signalled_in_shard_two)
  out = tmp_path / "again"  # the fixture's own store is tmp_path / "store"
  kw = dict(contexts_per_shard=8, progress=False, info={"model": "tiny"})
  with pytest.raises(preemption.Interrupted, match="2 of 6 shards complete"):
    hv.harvest_to_store(model, ids, 1, out, **kw)
  assert sorted(p.name for p in out.glob("acts_*")) == ["acts_00000.npy", "acts_00001.npy"]
  assert not [p for p in out.iterdir() if "tmp" in p.name]  # nothing half-written
  monkeypatch.setattr(hv, "hook_activations", real)
  hv.harvest_to_store(model, ids, 1, out, **kw)
  for f in sorted(reference.glob("*.npy")):
    assert (out / f.name).read_bytes() == f.read_bytes(), f.name


# The child resets SIGINT and SIGTERM to their defaults itself (a `preexec_fn` would fork this
# multithreaded process), then runs `wsae` as `python -m wsae_jax` does.
_WITH_DEFAULT_SIGNALS = (
  "import runpy, signal, sys\n"
  "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
  "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
  "sys.argv = ['wsae', *sys.argv[1:]]\n"
  "runpy.run_module('wsae_jax', run_name='__main__')\n"
)


def _cli_train(out, *extra):
  return ["train", *relu_train_options(out, steps=1000), *extra]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_wsae_train_signalled_between_checkpoints_resumes_bit_identical(tmp_path, signum):
  run = tmp_path / "run"
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
    [sys.executable, "-c", _WITH_DEFAULT_SIGNALS, *_cli_train(run)],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  ck_dir = run / "checkpoints"
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and proc.poll() is None:
    if ck_dir.exists() and any(p.name.isdigit() for p in ck_dir.iterdir()):
      break  # the first periodic checkpoint (step 100) is complete: training is under way
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be signalled: " + proc.stderr.read()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signum, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and "Traceback" not in err, err
  assert f"interrupted by {signal.Signals(signum).name}" in lines[0]
  assert lines[0].rstrip().endswith("--resume"), lines[0]
  steps = checkpoint.Checkpointer(ck_dir).steps()
  assert steps[-1] > 100 and steps[-1] < 1000, steps  # the signal's checkpoint, mid-run
  assert cli.main(_cli_train(run, "--resume")) == 0
  assert cli.main(_cli_train(tmp_path / "ref")) == 0
  _, p_ref = io.load_saelens(tmp_path / "ref" / "sae")
  _, p_res = io.load_saelens(run / "sae")
  for k in p_ref:  # bit-identical on CPU: same program, same batches (a function of seed, step)
    assert np.array_equal(p_ref[k], p_res[k]), k


def test_a_signal_to_one_of_two_processes_stops_both_at_one_step(tmp_path, four_devices):
  """Two processes (two CPU devices each, gloo): SIGTERM reaches process 1 alone at step 20; both
  stop after that step, save it together, exit 143; resumed, both end where one process with the
  same four devices ends uninterrupted."""
  import socket

  from wsae_jax import parallel

  worker = os.path.join(os.path.dirname(__file__), "workers", "multihost_preempt.py")

  def launch(mode):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      addr = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [
      subprocess.Popen(
        [sys.executable, worker, addr, str(i), str(tmp_path / "ck"), str(tmp_path / "out"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
      for i in range(2)
    ]
    return [(p.communicate(timeout=300)[0], p.returncode) for p in procs]

  for log, rc in launch("interrupt"):
    assert rc == 143, log[-3000:]
  import json

  stops = [json.loads((tmp_path / f"out.{i}.json").read_text()) for i in range(2)]
  assert stops == [{"step": 20, "saved": True}] * 2
  assert checkpoint.Checkpointer(tmp_path / "ck").steps() == [20]
  for log, rc in launch("resume"):
    assert rc == 0, log[-3000:]
  multi = dict(np.load(tmp_path / "out.npz"))
  cfg = w.make_config("tied", d_in=8, d_sae=16)
  tc = w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
  state, _ = train_lib.train(
    cfg,
    tc,
    w.SyntheticSource(W_P, 0.8, 64, seed=0),
    progress=False,
    mesh=parallel.data_mesh(four_devices),
  )
  assert_close({k: multi[k] for k in state.params}, jax.device_get(state.params), 1e-5, 1e-6)

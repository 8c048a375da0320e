"""Two processes on 127.0.0.1 with two CPU devices each (gloo collectives) against one process
with four devices: the same final parameters, with the batch split over the processes and with
the latents split over them (issue 34)."""

import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import parallel
from wsae_jax.training import trainer as train_lib

WORKER = pathlib.Path(__file__).parent / "workers" / "multihost_train.py"


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize(
  "arch, latent",
  # relu trains from host arrays, tied on device; topk (its sparse path) with 4 latent shards
  # across the two processes, from host arrays.
  [("tied", 1), ("relu", 1), ("topk", 4)],
)
def test_two_processes_equal_one_process_with_four_devices(arch, latent, tmp_path, four_devices):
  addr = f"127.0.0.1:{_free_port()}"
  outs = [tmp_path / f"p{i}.npz" for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, str(WORKER), addr, "2", str(i), str(outs[i]), arch, str(latent)],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  multi = dict(np.load(outs[0]))

  # The same run in this process, on 4 local devices.
  W = w.polygon_matrix(3, 3, n_mono=2)
  cfg = w.make_config(
    arch, d_in=8, d_sae=16, **({"k": 3, "sparse_path": True} if arch == "topk" else {})
  )
  tc = w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
  x = np.asarray(w.SyntheticSource(W, 0.8, 1).sample(7, 640)[1])
  data = w.ArraySource(x, 64, seed=1) if arch != "tied" else w.SyntheticSource(W, 0.8, 64, seed=0)
  mesh = (
    parallel.training_mesh(latent, four_devices) if latent > 1 else parallel.data_mesh(four_devices)
  )
  state, hist = train_lib.train(cfg, tc, data, progress=False, mesh=mesh)
  single = jax.device_get(state.params)
  # Same devices layout and program; only the cross-process all-reduce may round differently.
  assert_close({k: multi[k] for k in single}, single, rtol=1e-5, atol=1e-6)
  assert_close(multi["loss"], hist.column("loss"), rtol=1e-5, atol=1e-6)

"""One process of a multi-process training run (launched by tests/test_multihost.py).

Usage: python multihost_train.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz ARCH [LATENT_SHARDS]

With LATENT_SHARDS 4 the latents are split over all 4 devices, so the "latent" axis spans the two
processes (each feeds the whole batch).
"""

import sys

from cpu_cluster import join

coordinator, num_processes, process_id, out, arch = sys.argv[1:6]
latent = int(sys.argv[6]) if len(sys.argv) > 6 else 1
jax = join(coordinator, int(num_processes), int(process_id))

import numpy as np  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import parallel  # noqa: E402
from wsae_jax.training import trainer as train  # noqa: E402

assert jax.device_count() == 4 and jax.local_device_count() == 2, jax.devices()
W = w.polygon_matrix(3, 3, n_mono=2)
extra = {"k": 3, "sparse_path": True} if arch == "topk" else {}
cfg = w.make_config(arch, d_in=8, d_sae=16, **extra)
tc = w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
x = np.asarray(w.SyntheticSource(W, 0.8, 1).sample(7, 640)[1])
if arch != "tied":
  data = w.ArraySource(x, 64, seed=1)  # host arrays: each process feeds its share of each batch
else:
  data = w.SyntheticSource(W, 0.8, 64, seed=0)
mesh = parallel.training_mesh(latent) if latent > 1 else None
state, hist = train.train(cfg, tc, data, progress=False, mesh=mesh)
params = train.to_host(state.params)
if jax.process_index() == 0:
  np.savez(out, loss=hist.column("loss"), **params)
print("done", jax.process_index(), flush=True)

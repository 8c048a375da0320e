"""The widest Top-k SAE the devices hold, trained: tokens/s and peak memory (issue 34).

    python benchmarks/bench_big_dictionary.py --out big.json          # every device
    python benchmarks/bench_big_dictionary.py --smoke                 # tiny sizes, CPU

At d_in 4,096, batch 4,096, k 32 (the Top-k sparse path, AuxK included): the dictionary doubles
from 65,536 latents while the compiled step's per-device bytes (`memory_analysis()`: arguments +
outputs − aliased + temporaries) stay under 85% of one device's memory (`memory_stats()`); the
widest that fits is trained for a few steps on one device, and, on a machine with several
devices, the latents of a dictionary as many times wider are split over all of them
(`parallel.training_mesh`). For each: the median step time, tokens/s and the device's peak
memory in use. `benchmarks/gpu.sh` runs it with GPU_BIG=1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))


def _step_and_state(d_in, d_sae, batch, k, mesh):
  import jax

  import wsae_jax as w
  from wsae_jax.training import state as state_lib
  from wsae_jax.training import trainer as train_lib
  from wsae_jax.training.config import resolve_run_defaults

  cfg = w.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)
  tc = w.TrainConfig(steps=10**6, batch_size=batch, warmup_steps=10)
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  shapes = jax.eval_shape(lambda: state_lib.new_state(resolve_run_defaults(cfg, tc), tc))
  return cfg, tc, step, shapes


def per_device_bytes(d_in, d_sae, batch, k, mesh) -> int:
  import jax
  import jax.numpy as jnp

  _, _, step, shapes = _step_and_state(d_in, d_sae, batch, k, mesh)
  m = step.lower(shapes, jax.ShapeDtypeStruct((batch, d_in), jnp.float32), None)
  m = m.compile().memory_analysis()
  return int(
    m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  )


def widest(d_in, batch, k, mesh, limit_bytes, start) -> tuple[int, int]:
  """The widest power-of-two multiple of `start` latents whose step fits `limit_bytes`."""
  best, best_bytes, d_sae = start, per_device_bytes(d_in, start, batch, k, mesh), start
  while True:
    d_sae *= 2
    need = per_device_bytes(d_in, d_sae, batch, k, mesh)
    if need > limit_bytes:
      return best, best_bytes
    best, best_bytes = d_sae, need


def train(d_in, d_sae, batch, k, mesh, steps) -> dict:
  import jax
  import numpy as np

  from wsae_jax import parallel
  from wsae_jax.training import state as state_lib

  cfg, tc, step, _ = _step_and_state(d_in, d_sae, batch, k, mesh)
  from wsae_jax.training.config import resolve_run_defaults

  state = state_lib.init_state(resolve_run_defaults(cfg, tc), tc, mesh=mesh)
  rng = np.random.default_rng(0)
  x = jax.device_put(
    rng.standard_normal((batch, d_in)).astype(np.float32), parallel.batch_sharded(mesh)
  )
  times = []
  for _ in range(steps + 1):  # the first step compiles
    t0 = time.perf_counter()
    state, metrics = step(state, x, None)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times[1:])
  stats = [d.memory_stats() or {} for d in mesh.devices.flat]
  return {
    "d_in": d_in,
    "d_sae": d_sae,
    "batch": batch,
    "k": k,
    "mesh": parallel.describe(mesh),
    "step_ms": round(median * 1e3, 1),
    "tokens_per_s": round(batch / median),
    "peak_bytes_in_use": max((s.get("peak_bytes_in_use", 0) for s in stats), default=0),
    "loss": float(metrics["loss"]),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  import jax

  from wsae_jax import parallel

  d_in, batch, k, start = (64, 256, 8, 1024) if a.smoke else (4096, 4096, 32, 65536)
  one = parallel.data_mesh(jax.devices()[:1])
  limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
  result = {"backend": jax.default_backend(), "devices": jax.device_count(), "bytes_limit": limit}
  if limit is None or a.smoke:  # CPU: no device memory to fill; the smoke size only
    d_sae, need = start, per_device_bytes(d_in, start, batch, k, one)
  else:
    d_sae, need = widest(d_in, batch, k, one, 0.85 * limit, start)
  result["one_device"] = {**train(d_in, d_sae, batch, k, one, a.steps), "compiled_bytes": need}
  n = jax.device_count()
  if n > 1:
    mesh = parallel.training_mesh(n)
    result["latent_sharded"] = train(d_in, d_sae * n, batch, k, mesh, a.steps)
  text = json.dumps(result, indent=2)
  print(text)
  if a.out:
    pathlib.Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
  main()

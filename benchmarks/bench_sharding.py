"""Latent sharding (issue 34): what each device holds when a dictionary's latents are split.

    python benchmarks/bench_sharding.py           # the compile table and the real run
    python benchmarks/bench_sharding.py --smoke   # tiny sizes, a few seconds

1. **Compile, do not allocate.** The Top-k training step (its sparse path, AuxK included) at d_in
   4,096, d_sae 1,048,576, batch 4,096 is lowered with `ShapeDtypeStruct`s and compiled on 8 forced
   CPU devices split 8 x 1, 4 x 2, 2 x 4 and 1 x 8 (data x latent); XLA's `memory_analysis()`
   gives each device's arguments (its share of the state and of the batch), outputs (aliased to
   the donated state), and temporaries. Target (issue 34): per-device bytes <= 1.15 x (1-shard
   bytes) / N + the batch's own activations (the temporaries, which scale with the device's rows
   x latents, the same at every split of 8 devices).
2. **A real run.** d_in 512, d_sae 65,536 (Top-k, k 32) trained for a few steps on 1 device and on
   4 latent shards of the 4 first devices: each device's resident parameter and Adam bytes (its
   addressable shards) and the exported SAE (equal to the 1-device run's to float32 rounding).

Writes benchmarks/results/sharding.json.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

BIG = {"d_in": 4096, "d_sae": 1 << 20, "batch": 4096, "k": 32}
REAL = {"d_in": 512, "d_sae": 65536, "batch": 256, "k": 32, "steps": 6}
SMOKE_BIG = {"d_in": 64, "d_sae": 4096, "batch": 256, "k": 8}
SMOKE_REAL = {"d_in": 32, "d_sae": 1024, "batch": 64, "k": 8, "steps": 3}


def compiled_bytes(size: dict, shards: int, devices) -> dict:
  """`memory_analysis()` of the Top-k step on `devices` with `shards` latent shards (per device)."""
  import jax
  import jax.numpy as jnp

  import wsae_jax as w
  from wsae_jax import parallel
  from wsae_jax.training import state as state_lib
  from wsae_jax.training import trainer as train_lib
  from wsae_jax.training.config import resolve_run_defaults

  cfg = w.TopKSAEConfig(d_in=size["d_in"], d_sae=size["d_sae"], k=size["k"])
  tc = w.TrainConfig(steps=10**6, batch_size=size["batch"], warmup_steps=10)
  mesh = parallel.training_mesh(shards, devices)
  shapes = jax.eval_shape(lambda: state_lib.new_state(resolve_run_defaults(cfg, tc), tc))
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  t0 = time.perf_counter()
  x = jax.ShapeDtypeStruct((size["batch"], size["d_in"]), jnp.float32)
  m = step.lower(shapes, x, None).compile().memory_analysis()
  seconds = time.perf_counter() - t0
  total = (
    m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  )
  return {
    "data": len(devices) // shards,
    "latent": shards,
    "arguments_bytes": int(m.argument_size_in_bytes),
    "outputs_bytes": int(m.output_size_in_bytes),
    "aliased_bytes": int(m.alias_size_in_bytes),
    "temporaries_bytes": int(m.temp_size_in_bytes),
    "per_device_bytes": int(total),
    "compile_s": round(seconds, 1),
  }


def compile_table(size: dict) -> dict:
  """Every split of 8 devices (data x latent), and latent-only meshes of N devices (data 1), which
  leave out data parallelism's own gradient sums."""
  import jax

  devices = jax.devices()[:8]
  rows = [compiled_bytes(size, n, devices) for n in (1, 2, 4, 8)]
  rows += [compiled_bytes(size, n, devices[:n]) for n in (1, 2, 4)]
  one = rows[0]
  dictionary = size["d_in"] * size["d_sae"] * 4  # one float32 (d_in, d_sae) matrix
  for r in rows:
    n = r["latent"]
    # The batch's own activations: one float32 (rows, latents) block of the device's share.
    activations = size["batch"] // r["data"] * size["d_sae"] // n * 4
    r["activations_bytes"] = activations
    r["target_bytes"] = int(1.15 * one["per_device_bytes"] / n + activations)
    r["meets_target"] = r["per_device_bytes"] <= r["target_bytes"]
    r["share_of_1_shard"] = round(r["per_device_bytes"] / one["per_device_bytes"], 4)
    # What the temporaries hold, in matrices of the device's (d_in, d_sae / N) share.
    r["temporaries_in_dictionary_shares"] = round(r["temporaries_bytes"] / (dictionary / n), 2)
  return {"size": size, "devices": len(devices), "rows": rows}


def real_run(size: dict) -> dict:
  import jax
  import numpy as np

  import wsae_jax as w
  from wsae_jax import parallel
  from wsae_jax.training import trainer as train_lib

  cfg = w.TopKSAEConfig(d_in=size["d_in"], d_sae=size["d_sae"], k=size["k"])
  tc = w.TrainConfig(
    steps=size["steps"], batch_size=size["batch"], warmup_steps=1, log_every=size["steps"]
  )
  rng = np.random.default_rng(0)
  data = rng.standard_normal((size["batch"] * size["steps"], size["d_in"])).astype(np.float32)
  devices = jax.devices()[:4]
  out = {}
  params = {}
  for name, mesh in (
    ("1_device", parallel.data_mesh(devices[:1])),
    ("4_latent_shards", parallel.training_mesh(4, devices)),
  ):
    t0 = time.perf_counter()
    state, _ = train_lib.train(cfg, tc, data, mesh=mesh, progress=False)
    seconds = time.perf_counter() - t0
    per_device = {}
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
      for shard in leaf.addressable_shards:
        per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
    out[name] = {
      "resident_param_and_adam_bytes_per_device": sorted(set(per_device.values())),
      "seconds": round(seconds, 1),
    }
    params[name] = jax.device_get(state.params)
  one = out["1_device"]["resident_param_and_adam_bytes_per_device"][0]
  four = max(out["4_latent_shards"]["resident_param_and_adam_bytes_per_device"])
  out["ratio_4_to_1"] = round(four / one, 4)
  out["export_max_abs_difference"] = float(
    max(
      np.max(np.abs(params["1_device"][k] - params["4_latent_shards"][k]))
      for k in params["1_device"]
    )
  )
  out["size"] = size
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="benchmarks/results/sharding.json")
  a = p.parse_args(argv)
  result = {
    "command": "python benchmarks/bench_sharding.py" + (" --smoke" if a.smoke else ""),
    "compile": compile_table(SMOKE_BIG if a.smoke else BIG),
    "real_run": real_run(SMOKE_REAL if a.smoke else REAL),
  }
  text = json.dumps(result, indent=2)
  print(text)
  if not a.smoke:
    pathlib.Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
  main()

"""Tokens/s of the jitted train step against the machine's float32 matmul rate, measured in one run.

    python benchmarks/bench_train_step.py                       # d_in=576, d_sae=4608, batch=4096
    python benchmarks/bench_train_step.py --smoke               # tiny sizes, seconds

A train step of an untied SAE costs about 10·B·d_in·d_sae FLOPs (encoder and decoder forward,
decoder weight and input gradients, encoder weight gradient); "fraction of matmul rate" is that
count divided by the step time, over numpy's float32 GEMM rate on a same-sized (B, d_in)·(d_in, d_sae)
product measured in the same process.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import parallel  # noqa: E402
from wsae_jax.training import state as state_lib  # noqa: E402
from wsae_jax.training import trainer as train_lib  # noqa: E402


def bench_arch(
  arch: str, d_in: int, d_sae: int, batch: int, k: int, gamma: bool, dtype: str = "float32"
) -> dict:
  extra = {"k": k} if arch == "topk" else {}
  cfg = w.make_config(arch, d_in=d_in, d_sae=d_sae, **extra)
  tc = w.TrainConfig(steps=10**6, batch_size=batch, warmup_steps=10, compute_dtype=dtype)
  mesh = parallel.data_mesh()
  state = state_lib.init_state(cfg, tc, mesh=mesh)
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  rng = np.random.default_rng(0)
  x = jax.device_put(
    rng.standard_normal((batch, d_in), dtype=np.float32), parallel.batch_sharded(mesh)
  )
  g = jnp.asarray(rng.uniform(0.5, 1.5, d_in), jnp.float32) if gamma else None
  t0 = time.perf_counter()
  state, m = step(state, x, g)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def run():
    holder["state"], _ = step(holder["state"], x, g)
    jax.block_until_ready(holder["state"])

  sec = common.timeit(run, repeats=5, min_seconds=2.0)
  flops = 10.0 * batch * d_in * d_sae
  return {
    "arch": arch,
    "d_in": d_in,
    "d_sae": d_sae,
    "batch": batch,
    "k": extra.get("k"),
    "gamma": gamma,
    "compute_dtype": dtype,
    "compile_s": compile_s,
    "step_s": sec,
    "tokens_per_s": batch / sec,
    "flops_per_s": flops / sec,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--d-in", type=int, default=576)
  p.add_argument("--d-sae", type=int, default=4608)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--smoke", action="store_true", help="tiny sizes to check the script runs")
  p.add_argument(
    "--bf16",
    action="store_true",
    help="also time each architecture with compute_dtype='bfloat16' (no γ)",
  )
  p.add_argument("--out", default="benchmarks/results/train_step.json")
  a = p.parse_args(argv)
  if a.smoke:
    a.d_in, a.d_sae, a.batch, a.k = 32, 128, 256, 8
  rows = []
  matmul_before = common.numpy_matmul_flops(a.batch, a.d_in, a.d_sae)
  for arch in ("relu", "topk"):
    for gamma in (False, True):
      rows.append(bench_arch(arch, a.d_in, a.d_sae, a.batch, a.k, gamma))
    if a.bf16:
      rows.append(bench_arch(arch, a.d_in, a.d_sae, a.batch, a.k, False, "bfloat16"))
  matmul_after = common.numpy_matmul_flops(a.batch, a.d_in, a.d_sae)
  matmul = max(matmul_before, matmul_after)
  print(
    f"numpy float32 matmul ({a.batch}x{a.d_in} @ {a.d_in}x{a.d_sae}): "
    f"{matmul_before / 1e9:.1f} GFLOP/s before, {matmul_after / 1e9:.1f} after; using the max"
  )
  print(
    f"{'arch':>5} {'gamma':>5} {'compile s':>9} {'step ms':>8} {'tokens/s':>10} "
    f"{'GFLOP/s':>8} {'of matmul':>9}"
  )
  for r in rows:
    r["fraction_of_matmul"] = r["flops_per_s"] / matmul
    print(
      f"{r['arch'] + (' bf16' if r['compute_dtype'] == 'bfloat16' else ''):>5} "
      f"{str(r['gamma']):>5} {r['compile_s']:>9.2f} {1e3 * r['step_s']:>8.1f} "
      f"{r['tokens_per_s']:>10.0f} {r['flops_per_s'] / 1e9:>8.1f} "
      f"{100 * r['fraction_of_matmul']:>8.1f}%"
    )
  common.write_json(
    a.out,
    {
      "machine": common.machine(),
      "matmul_flops_per_s": matmul,
      "matmul_before": matmul_before,
      "matmul_after": matmul_after,
      "rows": rows,
      "command": " ".join(sys.argv),
    },
  )


if __name__ == "__main__":
  main()

"""64-member sweeps as one compiled program against the same 64 runs one after another.

    python benchmarks/bench_sweep.py                 # tied and Top-k, K=64, n_p=20, d_sae=200,
                                                     # batch 1024, 2,000 steps (~25 min, 2 cores)
    python benchmarks/bench_sweep.py --archs topk --steps 500
    python benchmarks/bench_sweep.py --smoke         # K=8, 50 steps

For each architecture both sides train the same members (seeds 0..K-1 for the initialisation, one
shared synthetic data stream at S = 0.9 from a trained toy-model W_p; Top-k with k = 20 =
(1 − S)·n) with the same TrainConfig; the sequential side calls the library's own `train.train`
once per member on one device. Compile time is included on both sides (a user pays it). The JSON
records, per architecture, both totals and their ratio (`speedup`), member-steps/s, the achieved
FLOP rate (10·B·n_p·d_sae per member-step, the dense count) against numpy's float32 GEMM rate at
one member's encoder shape and at 2048³, and the largest parameter difference between the sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import parallel  # noqa: E402
from wsae_jax.data import problems
from wsae_jax.training import sweep
from wsae_jax.training import trainer as train_lib  # noqa: E402


def bench_arch(arch: str, W_p, a) -> dict:
  n_p, n = W_p.shape
  if arch == "topk":
    cfg = w.TopKSAEConfig(d_in=n_p, d_sae=a.n, k=a.k)
  else:
    cfg = w.TiedSAEConfig(d_in=n_p, d_sae=a.n)
  tc = w.TrainConfig(
    steps=a.steps, batch_size=a.batch, learning_rate=1e-3, warmup_steps=50, log_every=100
  )
  members = [{"seed": i, "sparsity": 0.9} for i in range(a.members)]

  t0 = time.perf_counter()
  res = sweep.train_sweep(
    cfg, tc, members, problems.SyntheticProblem(W_p), progress=False, member_chunk=a.member_chunk
  )
  sweep_s = time.perf_counter() - t0

  one_device = parallel.data_mesh(jax.devices()[:1])
  t0 = time.perf_counter()
  worst = 0.0
  for m in members:
    src = w.SyntheticSource(W_p, m["sparsity"], a.batch, seed=0)
    state, _ = train_lib.train(
      cfg, dataclasses.replace(tc, seed=m["seed"]), src, progress=False, mesh=one_device
    )
    worst = max(
      worst, float(np.abs(np.asarray(state.params["W_enc"]) - res.params(m["seed"])["W_enc"]).max())
    )
  seq_s = time.perf_counter() - t0

  member_steps = a.members * a.steps
  flops = 10.0 * a.batch * n_p * a.n * member_steps
  record = {
    "arch": arch,
    "config": cfg.to_dict(),
    "sweep_s": sweep_s,
    "sweep_train_s": res.seconds,
    "sequential_s": seq_s,
    "speedup": seq_s / sweep_s,
    "compiles": res.compiles,
    "sweep_ms_per_member_step": 1e3 * res.seconds / member_steps,
    "sequential_ms_per_member_step": 1e3 * seq_s / member_steps,
    "sweep_gflops": flops / res.seconds / 1e9,
    "sequential_gflops": flops / seq_s / 1e9,
    "max_abs_param_diff": worst,
  }
  print(
    f"{arch}: K={a.members} x {a.steps} steps: sweep {sweep_s:.1f} s (train loop "
    f"{res.seconds:.1f} s, {res.compiles} compile), sequential {seq_s:.1f} s -> "
    f"{seq_s / sweep_s:.2f}x; {record['sweep_ms_per_member_step']:.3f} vs "
    f"{record['sequential_ms_per_member_step']:.3f} ms per member-step; "
    f"{record['sweep_gflops']:.1f} GFLOP/s; max |param diff| {worst:.2e}",
    flush=True,
  )
  return record


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--archs", default="tied,topk", help="comma-separated: tied, topk")
  p.add_argument("--members", type=int, default=64)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--n-p", type=int, default=20)
  p.add_argument("--n", type=int, default=200)
  p.add_argument("--k", type=int, default=20, help="Top-k: active latents ((1 - S) n at S = 0.9)")
  p.add_argument("--member-chunk", type=int, default=4)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="benchmarks/results/sweep.json")
  a = p.parse_args(argv)
  if a.smoke:
    a.members, a.steps = 8, 50
  W_p = w.toy_model_matrix(jax.random.key(0), a.n, a.n_p, 0.9, steps=1000)
  mm_member = common.numpy_matmul_flops(a.batch, a.n_p, a.n)
  runs = {arch: bench_arch(arch, W_p, a) for arch in a.archs.split(",")}
  mm_large = common.numpy_matmul_flops(2048, 2048, 2048, repeats=3)
  record = {
    "machine": common.machine(),
    "members": a.members,
    "steps": a.steps,
    "batch": a.batch,
    "n_p": a.n_p,
    "d_sae": a.n,
    "member_chunk": a.member_chunk,
    "runs": runs,
    "numpy_gemm_member_shape_gflops": mm_member / 1e9,
    "numpy_gemm_2048_gflops": mm_large / 1e9,
    "command": " ".join(["python", "benchmarks/bench_sweep.py", *(argv or sys.argv[1:])]),
  }
  print(
    f"numpy GEMM: {mm_member / 1e9:.1f} GFLOP/s at the member shape, {mm_large / 1e9:.1f} at 2048^3"
  )
  common.write_json(a.out, record)
  return record


if __name__ == "__main__":
  main()

"""A 64-member sweep as one compiled program against the same 64 runs one after another.

    python benchmarks/bench_sweep.py            # K=64 tied SAEs, n_p=20, d_sae=200, batch 1024,
                                                # 2,000 steps; about 9 minutes on 2 CPU cores
    python benchmarks/bench_sweep.py --smoke    # K=8, 50 steps

Both sides train the same members (seeds 0..K-1 for the initialisation, one shared synthetic
data stream at S = 0.9 from a trained toy-model W_p) with the same TrainConfig; the sequential side
calls the library's own `train.train` once per member. Compile time is included on both sides
(a user pays it). The JSON records both totals, the ratio, member-steps/s, the achieved FLOP rate
(10·B·n_p·d_sae per member-step) against numpy's float32 GEMM rate for one member's encoder product
and for a large square product, and the largest parameter difference between the two sides.
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
from wsae_jax import parallel, sweep  # noqa: E402
from wsae_jax import train as train_lib  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--members", type=int, default=64)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--n-p", type=int, default=20)
  p.add_argument("--n", type=int, default=200)
  p.add_argument("--member-chunk", type=int, default=4)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="benchmarks/results/sweep.json")
  a = p.parse_args(argv)
  if a.smoke:
    a.members, a.steps = 8, 50
  W_p = w.toy_model_matrix(jax.random.key(0), a.n, a.n_p, 0.9, steps=1000)
  cfg = w.TiedSAEConfig(d_in=a.n_p, d_sae=a.n)
  tc = w.TrainConfig(steps=a.steps, batch_size=a.batch, learning_rate=1e-3, warmup_steps=50,
                     log_every=100)
  members = [{"seed": i, "sparsity": 0.9} for i in range(a.members)]

  t0 = time.perf_counter()
  res = sweep.train_sweep(cfg, tc, members, sweep.SyntheticProblem(W_p), progress=False,
                          member_chunk=a.member_chunk, eval_samples=1024)
  sweep_s = time.perf_counter() - t0
  sweep_train_s = res.seconds

  one_device = parallel.data_mesh(jax.devices()[:1])
  t0 = time.perf_counter()
  worst = 0.0
  for m in members:
    src = w.SyntheticSource(W_p, m["sparsity"], a.batch, seed=0)
    state, _ = train_lib.train(cfg, dataclasses.replace(tc, seed=m["seed"]), src, progress=False,
                               mesh=one_device)
    worst = max(worst, float(np.abs(np.asarray(state.params["W_enc"])
                                    - res.params(m["seed"])["W_enc"]).max()))
  seq_s = time.perf_counter() - t0

  member_steps = a.members * a.steps
  flops = 10.0 * a.batch * a.n_p * a.n * member_steps
  mm_member = common.numpy_matmul_flops(a.batch, a.n_p, a.n)
  mm_large = common.numpy_matmul_flops(2048, 2048, 2048, repeats=3)
  record = {
      "machine": common.machine(), "members": a.members, "steps": a.steps, "batch": a.batch,
      "n_p": a.n_p, "d_sae": a.n, "member_chunk": a.member_chunk,
      "sweep_s": sweep_s, "sweep_train_s": sweep_train_s, "sequential_s": seq_s,
      "speedup": seq_s / sweep_s, "compiles": res.compiles,
      "sweep_member_steps_per_s": member_steps / sweep_train_s,
      "sequential_member_steps_per_s": member_steps / seq_s,
      "sweep_gflops": flops / sweep_train_s / 1e9, "sequential_gflops": flops / seq_s / 1e9,
      "numpy_gemm_member_shape_gflops": mm_member / 1e9, "numpy_gemm_2048_gflops": mm_large / 1e9,
      "max_abs_param_diff": worst, "command": " ".join(sys.argv),
  }
  print(f"K={a.members} x {a.steps} steps: sweep {sweep_s:.1f} s (train loop {sweep_train_s:.1f} s, "
        f"{res.compiles} compile), sequential {seq_s:.1f} s -> {seq_s / sweep_s:.1f}x; "
        f"{member_steps / sweep_train_s:.0f} member-steps/s = {flops / sweep_train_s / 1e9:.1f} "
        f"GFLOP/s (numpy GEMM: {mm_member / 1e9:.1f} at the member shape, {mm_large / 1e9:.1f} at "
        f"2048^3); max |param diff| {worst:.2e}")
  common.write_json(a.out, record)


if __name__ == "__main__":
  main()

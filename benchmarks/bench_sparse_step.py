"""The Top-k family's sparse step against its bound and against the ReLU step, side by side.

    python benchmarks/bench_sparse_step.py            # the three sizes of bench_vs_torch (~6 min)
    python benchmarks/bench_sparse_step.py --smoke    # tiny sizes, seconds
    python benchmarks/bench_sparse_step.py --plan gpu # 4096 x 131072 (benchmarks/gpu.sh)

Per size, in one process, one after another: the jitted train step (loss, gradient, Adam) of
ReLU, Top-k dense, Top-k sparse, BatchTopK dense and BatchTopK sparse (median ms); then the
sparse Top-k step taken apart — the encoder product alone, the selection (`lax.top_k` on the
pre-activations) alone, both in one program (the bound "encoder product + selection"), and
`sparse_path.selected_decode` forward and forward + backward — so the JSON says how far the step
is from its bound and what holds the rest. Also the selection at 4,608–131,072 latents:
`lax.top_k` against `lax.approx_max_k` (and its recall), which on CPU is no faster.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import models, parallel  # noqa: E402
from wsae_jax.models import sparse_path, topk  # noqa: E402
from wsae_jax.training import state as state_lib  # noqa: E402
from wsae_jax.training import trainer as train_lib  # noqa: E402

SIZES = [(576, 4608, 4096, 32), (576, 18432, 2048, 32), (768, 24576, 1024, 32)]
SELECT = [(1024, 4608, 32), (1024, 18432, 32), (256, 65536, 32), (256, 131072, 64)]
GPU_SIZES = [(4096, 131072, 4096, 32)]
"""A Llama-3-8B-sized dictionary (d_in 4,096, 131,072 latents): Top-k dense against sparse and
ReLU only (the BatchTopK steps would not fit the step's time limit in gpu.sh)."""
GPU_SELECT = [(4096, 131072, 32), (4096, 131072, 128)]


def _ms(fn, *args) -> float:
  jitted = jax.jit(fn)

  def run():
    jax.block_until_ready(jitted(*args))

  return 1000 * common.timeit(run, repeats=5, min_seconds=1.0)


def step_ms(arch, d, m, b, **extra) -> float:
  cfg = w.make_config(arch, d_in=d, d_sae=m, **extra)
  tc = w.TrainConfig(steps=10**6, batch_size=b, warmup_steps=10)
  mesh = parallel.data_mesh(jax.devices()[:1])
  holder = {"state": state_lib.init_state(cfg, tc, mesh=mesh)}
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  x = jax.device_put(
    np.random.default_rng(0).standard_normal((b, d), dtype=np.float32),
    parallel.batch_sharded(mesh),
  )

  def run():
    holder["state"], _ = step(holder["state"], x, None)
    jax.block_until_ready(holder["state"])

  return 1000 * common.timeit(run, repeats=5, min_seconds=2.0)


def parts_ms(d, m, b, k) -> dict:
  cfg = w.TopKSAEConfig(d_in=d, d_sae=m, k=k, sparse_path=True)
  p = models.init(cfg, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((b, d), dtype=np.float32))
  pre = topk.pre_activations(cfg, p, x)
  idx = jax.lax.top_k(pre, k)[1]
  keep = jnp.ones(idx.shape, bool)
  decode = lambda q, x: sparse_path.selected_decode(
    (m,), x - q["b_dec"], q["W_enc"], q["b_enc"], q["W_dec"], idx, keep
  )
  return {
    "encoder_product_ms": _ms(lambda q, x: topk.pre_activations(cfg, q, x), p, x),
    "selection_ms": _ms(lambda a: jax.lax.top_k(a, k)[1], pre),
    "bound_ms": _ms(lambda q, x: jax.lax.top_k(topk.pre_activations(cfg, q, x), k)[1], p, x),
    "selected_decode_forward_ms": _ms(decode, p, x),
    "selected_decode_forward_backward_ms": _ms(
      jax.grad(lambda q, x: jnp.sum(jnp.square(decode(q, x)[1]))), p, x
    ),
  }


def selection_row(b, m, k) -> dict:
  pre = jax.random.normal(jax.random.key(0), (b, m))
  exact = np.asarray(jax.lax.top_k(pre, k)[1])
  approx = np.asarray(jax.jit(lambda a: jax.lax.approx_max_k(a, k)[1])(pre))
  recall = np.mean([len(set(e) & set(a)) / k for e, a in zip(exact, approx)])
  return {
    "batch": b,
    "d_sae": m,
    "k": k,
    "top_k_ms": _ms(lambda a: jax.lax.top_k(a, k)[1], pre),
    "approx_max_k_ms": _ms(lambda a: jax.lax.approx_max_k(a, k)[1], pre),
    "approx_max_k_recall": float(recall),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--plan", choices=("cpu", "gpu"), default="cpu")
  p.add_argument("--out", default="benchmarks/results/sparse_step.json")
  a = p.parse_args(argv)
  gpu = a.plan == "gpu"
  sizes = [(32, 1024, 256, 8)] if a.smoke else GPU_SIZES if gpu else SIZES
  rows = []
  for d, m, b, k in sizes:
    row = {"d_in": d, "d_sae": m, "batch": b, "k": k}
    row["relu_step_ms"] = step_ms("relu", d, m, b)
    row["topk_dense_step_ms"] = step_ms("topk", d, m, b, k=k, sparse_path=False)
    row["topk_sparse_step_ms"] = step_ms("topk", d, m, b, k=k, sparse_path=True)
    if not gpu:
      row["batchtopk_dense_step_ms"] = step_ms("batchtopk", d, m, b, k=float(k))
      row["batchtopk_sparse_step_ms"] = step_ms("batchtopk", d, m, b, k=float(k), sparse_path=True)
      row["batchtopk_sparse_over_dense"] = (
        row["batchtopk_dense_step_ms"] / row["batchtopk_sparse_step_ms"]
      )
    row.update(parts_ms(d, m, b, k))
    row["topk_sparse_over_relu"] = row["relu_step_ms"] / row["topk_sparse_step_ms"]
    row["topk_sparse_over_dense"] = row["topk_dense_step_ms"] / row["topk_sparse_step_ms"]
    row["bound_over_topk_sparse"] = row["bound_ms"] / row["topk_sparse_step_ms"]
    rows.append(row)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
  plan = [(64, 1024, 8)] if a.smoke else GPU_SELECT if gpu else SELECT
  selection = [selection_row(*s) for s in plan]
  for s in selection:
    print(json.dumps(s))
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  record = {"machine": common.machine(), "plan": a.plan, "steps": rows, "selection": selection}
  out.write_text(json.dumps(record, indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()

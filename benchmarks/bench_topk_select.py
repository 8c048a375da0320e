"""Top-k selection on XLA: lax.top_k (+ scatter) against the sort-free radix search, per shape.

    python benchmarks/bench_topk_select.py          # ~1 minute on 2 CPU cores
    python benchmarks/bench_topk_select.py --smoke

For each (batch, d_sae, k): the median time of the jitted forward `topk_activation` and of its
gradient, for method="top_k", "radix" and "blocked" (two-stage top-k, no scatter), side by side
in one process, and whether all give identical outputs and gradients. `approx_max_k` (values only) is timed alongside for
reference: on TPU it is the fast approximate path; on CPU it falls back to an exact sort.
`models.selection.RADIX_SELECT_MAX_WIDTH` / `RADIX_SELECT_MIN_K` (what method="auto" uses) were set from these.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from wsae_jax import models  # noqa: E402

SHAPES = [
  (1024, 200, 10),
  (1024, 200, 20),
  (1024, 200, 60),
  (1024, 200, 200),
  (1024, 512, 32),
  (1024, 1024, 32),
  (4096, 4608, 32),
]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--wide-only", action="store_true", help="only the (4096, 4608, 32) shape")
  p.add_argument("--out", default="benchmarks/results/topk_select.json")
  a = p.parse_args(argv)
  shapes = SHAPES[:2] if a.smoke else SHAPES[-1:] if a.wide_only else SHAPES
  rows = []
  for B, M, k in shapes:
    pre = jax.random.normal(jax.random.key(0), (B, M))
    row = {"batch": B, "d_sae": M, "k": k}
    outs = {}
    for method in ("top_k", "radix", "blocked"):
      fwd = jax.jit(lambda p, m=method: models.topk_activation(p, k, method=m))
      grad = jax.jit(
        jax.grad(lambda p, m=method: jnp.sum(models.topk_activation(p, k, method=m) ** 2))
      )
      row[f"{method}_fwd_ms"] = 1e3 * common.timeit(lambda: jax.block_until_ready(fwd(pre)))
      row[f"{method}_grad_ms"] = 1e3 * common.timeit(lambda: jax.block_until_ready(grad(pre)))
      outs[method] = (fwd(pre), grad(pre))
    approx = jax.jit(lambda p: jax.lax.approx_max_k(p, k)[0])
    row["approx_max_k_ms"] = 1e3 * common.timeit(lambda: jax.block_until_ready(approx(pre)))
    row["identical"] = bool(
      all(jnp.all(outs["top_k"][i] == outs[m][i]) for m in ("radix", "blocked") for i in (0, 1))
    )
    row["auto_picks"] = (
      "radix"
      if M <= models.selection.RADIX_SELECT_MAX_WIDTH and k >= models.selection.RADIX_SELECT_MIN_K
      else "top_k"
    )
    rows.append(row)
    print(
      f"({B}, {M}) k={k}: top_k {row['top_k_fwd_ms']:.2f} / {row['top_k_grad_ms']:.2f} ms, "
      f"radix {row['radix_fwd_ms']:.2f} / {row['radix_grad_ms']:.2f} ms, "
      f"blocked {row['blocked_fwd_ms']:.2f} / {row['blocked_grad_ms']:.2f} ms (fwd / grad), "
      f"approx_max_k {row['approx_max_k_ms']:.2f} ms; identical {row['identical']}; auto -> "
      f"{row['auto_picks']}",
      flush=True,
    )
  common.write_json(
    a.out,
    {
      "machine": common.machine(),
      "rows": rows,
      "command": " ".join(["python", "benchmarks/bench_topk_select.py", *(argv or sys.argv[1:])]),
    },
  )


if __name__ == "__main__":
  main()

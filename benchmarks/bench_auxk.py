"""What the AuxK term costs in a Top-k step, and what gathering the dead latents saves (#28).

    python benchmarks/bench_auxk.py            # d_in=576, d_sae=4608, batch=4096, k=32
    python benchmarks/bench_auxk.py --smoke

Times `value_and_grad` of the Top-k loss (the step's work less Adam) side by side in one process:
no dead latent (AuxK skipped), `--dead` of the latents dead with AuxK over the gathered dead
columns (the library's path while at most `topk.aux_width` are dead), and the same with the
full-width AuxK (a top-k over all d_sae latents and a dense (B × d_sae)·(d_sae × d_in) product,
what the library did before). Ratios are of medians measured in the same run.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import models  # noqa: E402
from wsae_jax.models import topk  # noqa: E402


def timed(cfg, params, x, dead, *, full_width: bool) -> float:
  with mock.patch.object(topk, "aux_width", (lambda c: c.d_sae) if full_width else topk.aux_width):
    f = jax.jit(jax.value_and_grad(lambda p: models.sae_loss(cfg, p, x, dead_M=dead)[0]))
    jax.block_until_ready(f(params))

    def run():
      jax.block_until_ready(f(params))

    return common.timeit(run, repeats=5, min_seconds=2.0)


def main(argv=None):
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--dead", type=float, default=0.01, help="fraction of latents dead")
  ap.add_argument("--out", default=None)
  a = ap.parse_args(argv)
  d_in, d_sae, batch, k = (16, 128, 256, 4) if a.smoke else (576, 4608, 4096, 32)
  cfg = w.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)
  params = models.init(cfg, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, d_in), np.float32))
  n_dead = max(1, int(a.dead * d_sae))
  dead = jnp.asarray(
    np.isin(np.arange(d_sae), np.random.default_rng(1).permutation(d_sae)[:n_dead])
  )
  none = jnp.zeros(d_sae, bool)
  rows = {
    "no dead latent": timed(cfg, params, x, none, full_width=False),
    f"{n_dead} dead, gathered": timed(cfg, params, x, dead, full_width=False),
    f"{n_dead} dead, full width": timed(cfg, params, x, dead, full_width=True),
  }
  base = rows["no dead latent"]
  result = {
    "d_in": d_in,
    "d_sae": d_sae,
    "batch": batch,
    "k": k,
    "aux_k": cfg.resolved_aux_k,
    "aux_width": topk.aux_width(cfg),
    "n_dead": n_dead,
    "machine": common.machine(),
    "seconds": rows,
    "relative_to_no_dead": {n: s / base for n, s in rows.items()},
  }
  for n, s in rows.items():
    print(f"{n:>26}: {1e3 * s:8.1f} ms  ({s / base:.2f}x the step without AuxK)")
  if a.out:
    common.write_json(a.out, result)
  return result


if __name__ == "__main__":
  main()

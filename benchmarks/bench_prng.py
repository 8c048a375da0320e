"""The data stream's random draw per JAX PRNG implementation (what `prng_impl` chooses).

    python benchmarks/bench_prng.py      # seconds

Times one jitted `uniform(fold_in(key(seed, impl), step), (batch, n))` per implementation, the
draw a `SyntheticSource` makes each step (batch 1,024, n = 200 by default), median of repeats.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from wsae_jax.data.sources import PRNG_IMPLS  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--n", type=int, default=200)
  p.add_argument("--out", default="benchmarks/results/prng.json")
  a = p.parse_args(argv)
  rows = {}
  for impl in PRNG_IMPLS:
    draw = jax.jit(
      lambda s, impl=impl: jax.random.uniform(
        jax.random.fold_in(jax.random.key(0, impl=impl), s), (a.batch, a.n)
      )
    )
    rows[impl] = 1e3 * common.timeit(lambda: jax.block_until_ready(draw(jnp.int32(3))), repeats=20)
    print(f"{impl:>13}: {rows[impl]:.3f} ms per ({a.batch}, {a.n}) draw", flush=True)
  common.write_json(
    a.out,
    {
      "machine": common.machine(),
      "batch": a.batch,
      "n": a.n,
      "ms_per_draw": rows,
      "command": " ".join(["python", "benchmarks/bench_prng.py", *(argv or sys.argv[1:])]),
    },
  )


if __name__ == "__main__":
  main()

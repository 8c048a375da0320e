"""Peak memory of training from a large activation file: 1M x 576 float16 (1.15 GB) by default.

    python benchmarks/bench_store_memory.py                        # makes the file, one epoch
    python benchmarks/bench_store_memory.py --path data/smollm2-l15 # a harvested store instead
    python benchmarks/bench_store_memory.py --smoke

Each measurement runs in a fresh process and reports its peak resident set (ru_maxrss, which
counts mapped file pages a process touched) for: (a) training a Top-k SAE (8x, k=32) through one
full epoch of the file with ActivationStore, and (b) the same with the whole file loaded into
memory first (`np.load` + ArraySource), the naive way, for 20 steps, and (c) the floor: the same
SAE and batch trained for 20 steps from 16 batches held in memory (what training costs without any
data). Target: (a) < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    import wsae_jax as w
    from wsae_jax.training import trainer as train
    from wsae_jax.data.store import ActivationStore
    path, mode, batch, width, k, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    t0 = time.perf_counter()
    if mode == "store":
        src = ActivationStore(path, batch, normalize=True, validate=True)
        rows, d_in = src.n_tokens, src.d_in
    elif mode == "floor":                    # the same training on 16 batches held in memory
        d_in = np.load(path, mmap_mode="r").shape[1]
        x = np.random.default_rng(0).standard_normal((16 * batch, d_in), np.float32)
        src = w.ArraySource(x, batch)
        rows = len(x)
    else:
        x = np.load(path)                    # the whole file in memory
        x = x.astype(np.float32)             # what training from an in-memory array needs
        src = w.ArraySource(x, batch)
        rows, d_in = x.shape
    steps = steps or rows // batch
    cfg = w.TopKSAEConfig(d_in=d_in, d_sae=width * d_in, k=k)
    tc = w.TrainConfig(steps=steps, batch_size=batch, learning_rate=1e-3, warmup_steps=10,
                       log_every=max(1, steps // 4))
    state, hist = train.train(cfg, tc, src, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"mode": mode, "rows": int(rows), "steps": steps, "peak_rss_gb": peak,
                      "seconds": time.perf_counter() - t0, "final_loss": hist.last()["loss"]}))
""")


def make_file(path: pathlib.Path, rows: int, d: int) -> None:
  mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, d))
  for i in range(0, rows, 2**16):
    n = min(2**16, rows - i)
    # Heavy-tailed, correlated rows like a residual stream: a random mixture of directions.
    g = np.random.default_rng(i)
    mm[i : i + n] = (
      g.standard_normal((n, 64), np.float32) @ g.standard_normal((64, d), np.float32)
    ).astype(np.float16)
  mm.flush()
  del mm


def run(path, mode, batch, width, k, steps):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
    [sys.executable, "-c", CHILD, str(path), mode, str(batch), str(width), str(k), str(steps)],
    capture_output=True,
    text=True,
    env=env,
  )
  if out.returncode != 0:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--path", default=None, help="a .npy file or store folder (default: make one)")
  p.add_argument("--rows", type=int, default=1_000_000)
  p.add_argument("--d-in", type=int, default=576)
  p.add_argument("--batch-size", type=int, default=4096)
  p.add_argument("--width", type=int, default=8)
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--steps", type=int, default=0, help="0: one full epoch")
  p.add_argument("--skip-naive", action="store_true", help="only measure the store")
  p.add_argument("--smoke", action="store_true")
  p.add_argument(
    "--out", default=str(pathlib.Path(__file__).parent / "results" / "store_memory.json")
  )
  args = p.parse_args(argv)
  if args.smoke:
    args.rows, args.d_in, args.batch_size, args.width = 20_000, 64, 512, 2
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(args.path) if args.path else pathlib.Path(tmp) / "acts.npy"
    if not args.path:
      t0 = time.perf_counter()
      make_file(path, args.rows, args.d_in)
      print(
        f"made {path}: {args.rows:,} x {args.d_in} float16, "
        f"{path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
        flush=True,
      )
    size_gb = (
      path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.glob("acts_*"))
    ) / 1e9
    results = [run(path, "store", args.batch_size, args.width, args.k, args.steps)]
    print(results[-1], flush=True)
    if path.is_file():
      results.append(run(path, "floor", args.batch_size, args.width, args.k, 20))
      print(results[-1], flush=True)
    if not args.skip_naive and path.is_file():
      # The naive run peaks as soon as the file is loaded; a few steps show it.
      results.append(run(path, "in-memory", args.batch_size, args.width, args.k, 20))
      print(results[-1], flush=True)
  record = {
    "file_gb": size_gb,
    "path": str(args.path or f"synthetic {args.rows} x {args.d_in} float16"),
    "batch_size": args.batch_size,
    "d_sae": args.width * args.d_in,
    "k": args.k,
    "results": results,
    "machine": common.machine(),
  }
  if not args.smoke:
    common.write_json(args.out, record)
  store = results[0]
  print(
    f"store: peak RSS {store['peak_rss_gb']:.2f} GB for a {size_gb:.2f} GB file "
    f"({store['steps']} steps, {store['seconds']:.0f} s)"
    + "".join(f"; {r['mode']}: {r['peak_rss_gb']:.2f} GB" for r in results[1:])
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())

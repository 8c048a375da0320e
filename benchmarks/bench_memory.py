"""The compiled training step's memory, by XLA's own accounting (no timing, so no noise).

    python benchmarks/bench_memory.py          # the three sizes of bench_vs_torch, relu and topk
    python benchmarks/bench_memory.py --smoke  # a tiny size

For each architecture, Top-k path and size: the step's arguments (parameters, Adam state, the
batch) and its temporaries (`Compiled.memory_analysis()`: every intermediate of the forward and
backward pass, as buffer assignment lays them out), with the AuxK term as the library builds it
and with it removed, so that what AuxK reserves is visible. A compiled program reserves the
temporaries of a `lax.cond` branch it may not run (AuxK runs only while some latent is dead);
PyTorch allocates such a branch only when it runs. Peak resident memory against PyTorch is
`bench_vs_torch.py`'s.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).parent))

SIZES = [(576, 4608, 4096, 32), (576, 18432, 2048, 32), (768, 24576, 1024, 32)]


def compiled_memory(arch: str, d_in: int, d_sae: int, batch: int, **extra) -> dict:
  import jax
  import jax.numpy as jnp

  import wsae_jax as w
  from wsae_jax import parallel
  from wsae_jax.training import state as state_lib
  from wsae_jax.training import trainer as train_lib

  cfg = w.make_config(arch, d_in=d_in, d_sae=d_sae, **extra)
  tc = w.TrainConfig(steps=10**6, batch_size=batch, warmup_steps=10)
  mesh = parallel.data_mesh()
  state = jax.eval_shape(lambda: state_lib.init_state(cfg, tc, mesh=mesh))
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  x = jax.ShapeDtypeStruct((batch, d_in), jnp.float32)
  m = step.lower(state, x, None).compile().memory_analysis()
  return {
    "arguments_mb": m.argument_size_in_bytes / 1e6,
    "temporaries_mb": m.temp_size_in_bytes / 1e6,
    "batch_by_d_sae_mb": batch * d_sae * 4 / 1e6,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="benchmarks/results/memory.json")
  a = p.parse_args(argv)
  from wsae_jax.models import topk

  sizes = [(32, 1024, 256, 8)] if a.smoke else SIZES
  rows = []
  for d, m, b, k in sizes:
    cases = [("relu", "-", {})] + [
      ("topk", name, {"k": k, "sparse_path": sp})
      for name, sp in (("auto", None), ("dense", False), ("sparse", True))
    ]
    for arch, path, extra in cases:
      row = {"arch": arch, "path": path, "d_in": d, "d_sae": m, "batch": b}
      row.update(compiled_memory(arch, d, m, b, **extra))
      if arch == "topk":
        no_aux = lambda cfg, params, *a: a[-1] * 0
        with mock.patch.object(topk, "auxk_loss", no_aux):
          row["temporaries_without_auxk_mb"] = compiled_memory(arch, d, m, b, **extra)[
            "temporaries_mb"
          ]
      rows.append(row)
      print(
        f"{arch:>4} {path:>6} {d}x{m} B={b}: arguments {row['arguments_mb']:6.0f} MB, "
        f"temporaries {row['temporaries_mb']:6.0f} MB "
        f"({row['temporaries_mb'] / row['batch_by_d_sae_mb']:.1f} (B, d_sae) buffers)"
        + (
          f", without AuxK {row['temporaries_without_auxk_mb']:6.0f} MB"
          if "temporaries_without_auxk_mb" in row
          else ""
        ),
        flush=True,
      )
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"rows": rows}, indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()

"""wsae-jax against the PyTorch baseline: tokens/s, peak memory, fraction of the matmul rate.

    python benchmarks/bench_vs_torch.py              # the three sizes of issue 5, relu and topk
    python benchmarks/bench_vs_torch.py --smoke      # tiny sizes
    python benchmarks/bench_vs_torch.py --torch-compile   # also torch.compile'd steps

Each (framework, architecture, size) runs in its own fresh subprocess, one after another in this
run, so the peak resident memory (VmHWM) is that configuration's alone; it includes the
framework's own footprint, reported separately as the same process's RSS just after import. The
numpy float32 GEMM rate is measured here, in the same run, at each size's (B, d_in) @ (d_in, d_sae)
shape. FLOPs per step are counted as the dense 10·B·d_in·d_sae for every path, so "fraction of
matmul rate" compares like with like (a sparse path can exceed 100%).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

SIZES = [(576, 4608, 4096, 32), (576, 18432, 2048, 32), (768, 24576, 1024, 32)]


def _status_mb(field: str) -> float:
  """`VmHWM` (peak) or `VmRSS` (now) of this process from /proc, in MB. Not `ru_maxrss`: Linux
  keeps that across fork + exec, so every worker's figure was floored at the parent's peak (the
  parent's numpy GEMM timing at that size), and the frameworks' footprints read the same."""
  try:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: the old way


def _rss_mb():
  return _status_mb("VmHWM")


def worker(
  framework: str,
  arch: str,
  d_in: int,
  d_sae: int,
  batch: int,
  k: int,
  steps: int,
  variant: str,
  init_file: str,
) -> dict:
  import numpy as np

  params = dict(np.load(init_file))  # the same initial weights on both sides
  rng = np.random.default_rng(0)
  x_np = rng.standard_normal((batch, d_in), dtype=np.float32)
  if framework == "jax":
    import jax

    import wsae_jax as w
    from wsae_jax import parallel
    from wsae_jax.training import state as state_lib
    from wsae_jax.training import trainer as train_lib

    base_rss = _status_mb("VmRSS")
    extra = (
      {"k": k, "sparse_path": {"dense": False, "sparse": True, "auto": None}[variant]}
      if arch == "topk"
      else {}
    )
    cfg = w.make_config(arch, d_in=d_in, d_sae=d_sae, **extra)
    tc = w.TrainConfig(steps=10**6, batch_size=batch, warmup_steps=10)
    mesh = parallel.data_mesh()
    state = state_lib.init_state(
      cfg, tc, mesh=mesh, params={n: jax.numpy.asarray(v) for n, v in params.items()}
    )
    step = train_lib.make_train_step(cfg, tc, mesh=mesh)
    x = jax.device_put(x_np, parallel.batch_sharded(mesh))
    t0 = time.perf_counter()
    state, _ = step(state, x, None)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = step(state, x, None)
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - t0) / steps
    loss = float(m["loss"])
    extra_info = {"sparse_path": getattr(cfg, "use_sparse_path", None)}
  else:
    import torch
    from torch_baseline import TorchSAE, TorchTrainer

    base_rss = _status_mb("VmRSS")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU machine: like for like
    sae = TorchSAE.from_params(arch, params, **({"k": k} if arch == "topk" else {})).to(device)
    trainer = TorchTrainer(
      sae, lr=1e-3, steps=10**6, warmup_steps=10, grad_clip=1.0, compile=variant == "compile"
    )
    x = torch.from_numpy(x_np).to(device)
    t0 = time.perf_counter()
    trainer.step(x)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
      loss = trainer.step(x)
    step_s = (time.perf_counter() - t0) / steps
    extra_info = {"torch_threads": torch.get_num_threads(), "torch_device": device}
  return {
    "framework": framework,
    "variant": variant,
    "arch": arch,
    "d_in": d_in,
    "d_sae": d_sae,
    "batch": batch,
    "k": k if arch == "topk" else None,
    "compile_s": compile_s,
    "step_s": step_s,
    "tokens_per_s": batch / step_s,
    "loss_after": loss,
    "peak_rss_mb": _rss_mb(),
    "framework_rss_mb": base_rss,
    **extra_info,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--torch-compile", action="store_true")
  p.add_argument("--out", default="benchmarks/results/vs_torch.json")
  p.add_argument("--worker", nargs=9, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.worker:
    fw, arch, d, m, b, k, steps, var, init_file = a.worker
    print(json.dumps(worker(fw, arch, int(d), int(m), int(b), int(k), int(steps), var, init_file)))
    return
  import tempfile

  import common
  import jax
  import numpy as np

  import wsae_jax as w

  tmp = pathlib.Path(tempfile.mkdtemp(prefix="wsae_bench_"))
  sizes = [(32, 1024, 256, 8), (64, 4096, 256, 8)] if a.smoke else SIZES
  runs = []
  for d, m, b, k in sizes:
    mm = common.numpy_matmul_flops(b, d, m)
    for arch in ("relu", "topk"):
      cfg = w.make_config(arch, d_in=d, d_sae=m, **({"k": k} if arch == "topk" else {}))
      init_file = tmp / f"{arch}_{d}_{m}.npz"
      np.savez(
        init_file, **{n: np.asarray(v) for n, v in w.models.init(cfg, jax.random.key(0)).items()}
      )
      variants = [("jax", "auto"), ("torch", "eager")]
      if arch == "topk":
        variants += [("jax", "dense"), ("jax", "sparse")]
      if a.torch_compile:
        variants.append(("torch", "compile"))
      for fw, var in variants:
        cmd = [
          sys.executable,
          __file__,
          "--worker",
          fw,
          arch,
          str(d),
          str(m),
          str(b),
          str(k),
          str(a.steps),
          var,
          str(init_file),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
          print(f"{fw}/{var} {arch} {(d, m, b)} failed:\n{out.stderr[-1500:]}", file=sys.stderr)
          runs.append(
            {
              "framework": fw,
              "variant": var,
              "arch": arch,
              "d_in": d,
              "d_sae": m,
              "batch": b,
              "error": out.stderr[-500:],
            }
          )
          continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["matmul_flops_per_s"] = mm
        r["fraction_of_matmul"] = 10.0 * b * d * m / r["step_s"] / mm
        runs.append(r)
        print(
          f"{arch:>4} d_in={d:<4} d_sae={m:<6} B={b:<5} {fw:>5}/{var:<7} "
          f"{r['tokens_per_s']:>9.0f} tok/s  step {1e3 * r['step_s']:>7.1f} ms  "
          f"peak {r['peak_rss_mb']:>6.0f} MB  {100 * r['fraction_of_matmul']:>5.1f}% of matmul",
          flush=True,
        )
  ratios = []
  for d, m, b, _k in sizes:
    for arch in ("relu", "topk"):

      def get(fw, var):
        return next(
          (
            r
            for r in runs
            if r["framework"] == fw
            and r["variant"] == var
            and r["arch"] == arch
            and r["d_sae"] == m
            and "error" not in r
          ),
          None,
        )

      j, t = get("jax", "auto"), get("torch", "eager")
      if j and t:
        ratios.append(
          {
            "arch": arch,
            "d_in": d,
            "d_sae": m,
            "batch": b,
            "speed_ratio_jax_over_torch": j["tokens_per_s"] / t["tokens_per_s"],
            "peak_rss_ratio_jax_over_torch": j["peak_rss_mb"] / t["peak_rss_mb"],
            "jax_sparse_path": j.get("sparse_path"),
          }
        )
  for r in ratios:
    print(
      f"{r['arch']:>4} {r['d_in']}x{r['d_sae']} B={r['batch']}: wsae-jax/torch tokens/s = "
      f"{r['speed_ratio_jax_over_torch']:.2f}, peak memory ratio = "
      f"{r['peak_rss_ratio_jax_over_torch']:.2f}"
    )
  common.write_json(
    a.out,
    {"machine": common.machine(), "runs": runs, "ratios": ratios, "command": " ".join(sys.argv)},
  )


if __name__ == "__main__":
  main()

"""Correctness on whatever accelerator JAX sees (run by benchmarks/gpu.sh; CPU works too).

On the default backend: (1) a 4-member sweep equals the same members trained one by one with
`train` (tied and Top-k); (2) training on the default device ends near the same run on the CPU
(float32 on both; matmul precision differs); (3) the radix Top-k selection equals lax.top_k.
Writes a JSON of the largest differences and a pass/fail per check; exits 1 if one fails.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

import wsae_jax as w
from wsae_jax import models, parallel
from wsae_jax.data import problems
from wsae_jax.training import sweep
from wsae_jax.training import trainer as train_lib


def _max_diff(a, b) -> float:
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def main(out: str) -> int:
  jax.config.update("jax_default_matmul_precision", "highest")  # TF32 off: compare like for like
  W_p = w.polygon_matrix(3, 3, n_mono=2)
  tc = w.TrainConfig(steps=50, batch_size=256, learning_rate=3e-3, warmup_steps=5, log_every=25)
  report = {
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "checks": {},
  }
  one = parallel.data_mesh(jax.devices()[:1])
  for name, cfg, members in (
    (
      "sweep_equals_train_tied",
      w.TiedSAEConfig(d_in=8, d_sae=16),
      [{"seed": s, "sparsity": 0.8, "alpha": a} for s in (0, 1) for a in (0.0, 1.0)],
    ),
    (
      "sweep_equals_train_topk",
      w.TopKSAEConfig(d_in=8, d_sae=40, k=20, dead_after_tokens=2048),
      [{"seed": s, "sparsity": 0.8, "k": k} for s in (0, 1) for k in (5, 20)],
    ),
  ):
    res = sweep.train_sweep(
      cfg,
      tc,
      members,
      problems.SyntheticProblem(W_p),
      progress=False,
      mesh=sweep.sweep_mesh(len(members), jax.devices()[:1]),
    )
    worst = 0.0
    for i, m in enumerate(members):
      c = res.member_config(i)
      gamma = None
      if m.get("alpha"):
        gamma = sweep.member_gammas(
          [{"gamma": None, "alpha": m["alpha"], "sparsity": 0.8, "data_seed": 0}],
          c,
          problems.SyntheticProblem(W_p),
          None,
        )[0]
      state, _ = train_lib.train(
        c,
        dataclasses.replace(tc, seed=m["seed"]),
        w.SyntheticSource(W_p, 0.8, tc.batch_size),
        gamma=gamma,
        mesh=one,
        progress=False,
      )
      worst = max(worst, _max_diff(res.params(i), jax.device_get(state.params)))
    report["checks"][name] = {"max_abs_diff": worst, "ok": worst < 1e-3}
  cfg = w.ReLUSAEConfig(d_in=8, d_sae=16)
  here, _ = train_lib.train(
    cfg, tc, w.SyntheticSource(W_p, 0.8, tc.batch_size), mesh=one, progress=False
  )
  with jax.default_device(jax.devices("cpu")[0]):
    cpu, _ = train_lib.train(
      cfg,
      tc,
      w.SyntheticSource(W_p, 0.8, tc.batch_size),
      mesh=parallel.data_mesh(jax.devices("cpu")[:1]),
      progress=False,
    )
  d = _max_diff(jax.device_get(here.params), jax.device_get(cpu.params))
  report["checks"]["default_device_equals_cpu"] = {"max_abs_diff": d, "ok": d < 1e-3}
  pre = jax.random.normal(jax.random.key(0), (4096, 200))
  same = bool(
    jnp.all(
      models.topk_activation(pre, 60, method="radix")
      == models.topk_activation(pre, 60, method="top_k")
    )
  )
  report["checks"]["radix_equals_top_k"] = {"ok": same}
  ok = all(c["ok"] for c in report["checks"].values())
  report["ok"] = ok
  pathlib.Path(out).write_text(json.dumps(report, indent=2))
  print(json.dumps(report["checks"], indent=1))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu_checks.json"))

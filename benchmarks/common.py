"""Shared benchmark helpers: timing with warm-up, the machine's float32 matmul rate, a record file."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time
from typing import Callable

import numpy as np


def timeit(fn: Callable[[], object], *, repeats: int = 5, min_seconds: float = 0.5) -> float:
  """Median seconds per call of `fn` (which must block until its work is done), after a warm-up."""
  fn()
  times = []
  t_start = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - t_start < min_seconds:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if len(times) >= 50:
      break
  return float(np.median(times))


def numpy_matmul_flops(m: int, k: int, n: int, *, repeats: int = 5) -> float:
  """Measured float32 FLOP/s of numpy's `(m, k) @ (k, n)` on this machine, now."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((m, k), dtype=np.float32)
  b = rng.standard_normal((k, n), dtype=np.float32)
  out = np.empty((m, n), np.float32)
  sec = timeit(lambda: np.matmul(a, b, out=out), repeats=repeats)
  return 2.0 * m * k * n / sec


def machine() -> dict:
  info = {
    "platform": platform.platform(),
    "processor": platform.processor(),
    "cpu_count": os.cpu_count(),
  }
  try:
    import jax

    info["jax"] = jax.__version__
    info["devices"] = [str(d) for d in jax.devices()]
  except Exception:  # pragma: no cover - benchmarks without jax
    pass
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        info["cpu"] = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return info


def write_json(path: str | os.PathLike, record: dict) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2))
  print(f"wrote {path}")

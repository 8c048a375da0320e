"""The README's Python blocks run as written (sizes shrunk), in order, on a tiny activation store
placed where the README expects SmolLM2's (`data/smollm2-l15`)."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SMALLER = {
  "steps=3000": "steps=20",
  "steps=2000": "steps=20",
  "steps=100": "steps=5",
  "batch_size=4096": "batch_size=32",
  "batch_size=16384": "batch_size=512",
}
NOT_RUN = ("jax.distributed.initialize",)  # needs a cluster


def python_blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_readme_python_block_runs(tmp_path, monkeypatch, capsys):
  from wsae_jax.data.store import ActivationWriter

  rng = np.random.default_rng(0)
  writer = ActivationWriter(
    tmp_path / "data" / "smollm2-l15", d_in=8, dtype="float32", context_len=16
  )
  for i in range(4):
    tokens = rng.integers(0, 30, 64)
    writer.write_shard(i, rng.standard_normal((64, 8)) + np.eye(8)[tokens % 8] * 3, tokens=tokens)
  monkeypatch.chdir(tmp_path)
  blocks = [b for b in python_blocks() if not any(s in b for s in NOT_RUN)]
  assert len(blocks) >= 3
  for i, block in enumerate(blocks):
    code = block
    for a, b in SMALLER.items():
      code = code.replace(a, b)
    try:
      exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": "readme"})
    except Exception as e:  # name the block in the failure
      pytest.fail(f"README python block {i} failed: {type(e).__name__}: {e}\n{block}")
  out = capsys.readouterr().out
  assert "l_gt" in out and "token_consistency" in out
  assert (tmp_path / "runs" / "notebook" / "sae" / "cfg.json").exists()

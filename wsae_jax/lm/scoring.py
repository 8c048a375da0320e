"""Scores that need the language model (the `harvest` extra): the next-token loss recovered when an
SAE's reconstruction replaces a layer's output, and the strings of token ids (for token classes).
"""

from __future__ import annotations

import numpy as np

from wsae_jax.lm import harvest as hv


def loss_recovered(model, contexts_NxT, layer: int, reconstruct, point: str = "resid_post") -> dict:
  """`(L_zero − L_sae) / (L_zero − L_clean)`: the fraction of the next-token loss that
  zero-ablating `layer`'s hook point `point` loses and the SAE's reconstruction gives back (1 = as
  good as the clean model). `reconstruct(h_NxD) -> x̂_NxD` on raw activations; position 0 keeps
  its activation."""

  def replace(h):
    flat = h.reshape(-1, h.shape[-1])
    return np.asarray(reconstruct(flat), np.float32).reshape(h.shape)

  clean = hv.next_token_loss(model, contexts_NxT)
  zero = hv.next_token_loss(model, contexts_NxT, layer=layer, replace=np.zeros_like, point=point)
  sae = hv.next_token_loss(model, contexts_NxT, layer=layer, replace=replace, point=point)
  return {
    "lm_loss_clean": clean,
    "lm_loss_zero_ablation": zero,
    "lm_loss_sae": sae,
    "loss_recovered": (zero - sae) / (zero - clean),
    "delta_lm_loss": sae - clean,
    "lm_contexts": int(len(contexts_NxT)),
    "lm_tokens": int(np.size(contexts_NxT)),
  }


def token_strings(tokenizer, token_ids) -> dict[int, str]:
  """The decoded string of each distinct token id."""
  return {int(t): tokenizer.decode([int(t)]) for t in np.unique(np.asarray(token_ids))}


def unembedding(model) -> tuple[np.ndarray, np.ndarray | None, str]:
  """`(W_U (vocab, d_model), final-norm scale (d_model,) or None, what was used)` of a causal LM:
  its output embedding and, where the model has one (Llama `model.norm`, GPT-2
  `transformer.ln_f`), the elementwise weight of the final norm before it."""
  W_U = model.get_output_embeddings().weight.detach().float().cpu().numpy()
  norm = None
  for owner, name in (("model", "norm"), ("transformer", "ln_f"), ("gpt_neox", "final_layer_norm")):
    mod = getattr(getattr(model, owner, None), name, None)
    if mod is not None and getattr(mod, "weight", None) is not None:
      norm = mod.weight.detach().float().cpu().numpy()
      return W_U, norm, f"W_dec · diag({owner}.{name}.weight) · W_Uᵀ"
  return W_U, None, "W_dec · W_Uᵀ (no final norm found)"


def logit_effects(W_dec_MxD, W_U_VxD, norm_D=None, *, top: int = 10, chunk: int = 512) -> dict:
  """Per latent, the tokens its decoder direction most promotes and suppresses through the
  unembedding: `(w_dec ⊙ g) W_Uᵀ` (g the final norm's scale; its normalising denominator, common
  to all tokens, is left out). Returns `promote_ids`, `promote` (M, top) largest first and
  `suppress_ids`, `suppress` (M, top) most negative first. Chunks of `chunk` latents bound memory."""
  W = np.asarray(W_dec_MxD, np.float32)
  if norm_D is not None:
    W = W * np.asarray(norm_D, np.float32)[None, :]
  U = np.asarray(W_U_VxD, np.float32)
  M, k = W.shape[0], min(top, U.shape[0])
  out = {
    n: np.zeros((M, k), dt)
    for n, dt in (
      ("promote_ids", np.int32),
      ("promote", np.float32),
      ("suppress_ids", np.int32),
      ("suppress", np.float32),
    )
  }
  for i in range(0, M, chunk):
    L = W[i : i + chunk] @ U.T
    hi = np.argpartition(-L, k - 1, axis=1)[:, :k]
    hi = np.take_along_axis(hi, np.argsort(-np.take_along_axis(L, hi, 1), axis=1), 1)
    lo = np.argpartition(L, k - 1, axis=1)[:, :k]
    lo = np.take_along_axis(lo, np.argsort(np.take_along_axis(L, lo, 1), axis=1), 1)
    out["promote_ids"][i : i + chunk], out["suppress_ids"][i : i + chunk] = hi, lo
    out["promote"][i : i + chunk] = np.take_along_axis(L, hi, 1)
    out["suppress"][i : i + chunk] = np.take_along_axis(L, lo, 1)
  return out


def sae_loss_recovered(cfg, params, model, store_path, *, eval_shards: int, contexts: int) -> dict:
  """`loss_recovered` of an SAE spliced in at an activation store's hook point: on the first
  `contexts` whole contexts (position 0 included) of the store's last `eval_shards` shards, the
  layer and hook point the store records, the SAE applied to raw activations (a run's
  normalisation is folded into its exported weights)."""
  import jax

  from wsae_jax import models
  from wsae_jax.data.store import ActivationStore

  store = ActivationStore(
    store_path,
    1,
    shards=slice(-eval_shards, None),
    shuffle=False,
    prefetch=0,
    drop_first_position=False,
  )
  _, ids = store.read_all(with_tokens=True)
  if ids is None or not store.context_len:
    raise ValueError(f"{store_path}: the LM loss needs token ids and contexts in the store.")
  ids_NxT = ids.reshape(-1, store.context_len)[:contexts]
  fwd = jax.jit(lambda p, xb: models.forward(cfg, p, xb)[1])
  return loss_recovered(
    model,
    ids_NxT,
    int(store.metadata["layer"]),
    lambda h: np.asarray(fwd(params, h)),
    point=store.metadata.get("hook_point") or "resid_post",
  )

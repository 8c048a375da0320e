"""Scores that need the language model (the `harvest` extra): the next-token loss recovered when an
SAE's reconstruction replaces a layer's output, and the strings of token ids (for token classes).
"""

from __future__ import annotations

import numpy as np

from wsae_jax.lm import harvest as hv


def loss_recovered(model, contexts_NxT, layer: int, reconstruct) -> dict:
  """`(L_zero − L_sae) / (L_zero − L_clean)`: the fraction of the next-token loss that
  zero-ablating `layer` loses and the SAE's reconstruction gives back (1 = as good as the clean
  model). `reconstruct(h_NxD) -> x̂_NxD` on raw activations; position 0 keeps its activation."""
  def replace(h):
    flat = h.reshape(-1, h.shape[-1])
    return np.asarray(reconstruct(flat), np.float32).reshape(h.shape)

  clean = hv.next_token_loss(model, contexts_NxT)
  zero = hv.next_token_loss(model, contexts_NxT, layer=layer, replace=np.zeros_like)
  sae = hv.next_token_loss(model, contexts_NxT, layer=layer, replace=replace)
  return {"lm_loss_clean": clean, "lm_loss_zero_ablation": zero, "lm_loss_sae": sae,
          "loss_recovered": (zero - sae) / (zero - clean), "delta_lm_loss": sae - clean,
          "lm_contexts": int(len(contexts_NxT)), "lm_tokens": int(np.size(contexts_NxT))}


def token_strings(tokenizer, token_ids) -> dict[int, str]:
  """The decoded string of each distinct token id."""
  return {int(t): tokenizer.decode([int(t)]) for t in np.unique(np.asarray(token_ids))}

"""The scores that read the tokens' strings (SAEBench-style, offline): k-sparse probing of token
classes (`probing`) and first-letter feature absorption (`absorption`), from one SAE's sparse codes
on held-out rows. `wsae eval --probe` and the studies call this, so they report the same thing."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from wsae_jax import models
from wsae_jax.evaluation import absorption, probing


def label_scores(cfg, params, codes, x_BxD, tokens_B, token_strings: Mapping[int, str]) -> dict:
  """`probing`, `probing_summary`, `absorption`, `absorption_summary` for one SAE; `codes`:
  `activations.sparse_codes(cfg, params, x)`; `token_strings`: the decoded string of each token
  id in `tokens_B` (`lm.scoring.token_strings`)."""
  _, lat, val = codes
  tokens = np.asarray(tokens_B)
  probes = probing.k_sparse_probing(
    lat, val, x_BxD, tokens, probing.token_classes(token_strings), cfg.d_sae
  )
  w_dec = np.asarray(models.decoder_matrix(cfg, params))
  absorbed = absorption.feature_absorption(
    lat, val, x_BxD, tokens, absorption.first_letter_classes(token_strings), w_dec
  )
  return {
    "probing": probes,
    "probing_summary": probing.summary(probes),
    "absorption": absorbed,
    "absorption_summary": absorption.summary(absorbed),
  }

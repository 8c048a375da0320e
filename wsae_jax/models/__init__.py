"""SAE architectures: one file each, found through one registry.

  base        `SAEConfig`, the `Architecture` record, the registry and the generic entry points
  selection   Top-k selection (sort-free radix search, `lax.top_k`)
  sparse_path the Top-k family's step through its selected latents (its own VJP)
  latent_shards  exact selection and the sparse decode when the latents are split over devices
  constraints optax projections (unit-norm decoder rows, thresholds >= 0)
  tied        the paper's theory SAE (tied weights, no biases)
  relu        ReLU + L1 weighted by decoder norms (Anthropic, April 2024)
  topk        Top-k + AuxK (Gao et al. 2024)
  jumprelu    JumpReLU + L0 through straight-through estimators (Rajamanoharan et al. 2024)
  batchtopk   BatchTopK with a learned inference threshold (Bussmann et al. 2024)
  matryoshka  Matryoshka BatchTopK: nested prefixes of the latents reconstruct too (Bussmann 2025)
  gated       Gated SAE: a gate path and a magnitude path sharing the encoder (Rajamanoharan 2024)

A new architecture is one new file here that calls `base.register`, plus its import below.
"""

from wsae_jax.models import (  # noqa: F401
  base,
  batchtopk,
  gated,
  jumprelu,
  latent_shards,
  matryoshka,
  relu,
  selection,
  tied,
  topk,
)
from wsae_jax.models.base import (
  ARCHITECTURES,
  Architecture,
  Hyperparameter,
  Params,
  SAEConfig,
  config_from_dict,
  decode,
  decoder_matrix,
  encode,
  for_saelens,
  forward,
  get,
  init,
  make_config,
  num_params,
  pre_activations,
  sae_loss,
  with_hyperparameters,
)
from wsae_jax.models.batchtopk import BatchTopKSAEConfig
from wsae_jax.models.gated import GatedSAEConfig
from wsae_jax.models.jumprelu import JumpReLUSAEConfig
from wsae_jax.models.matryoshka import MatryoshkaBatchTopKSAEConfig
from wsae_jax.models.relu import ReLUSAEConfig
from wsae_jax.models.selection import kth_largest_mask, topk_activation
from wsae_jax.models.tied import TiedSAEConfig
from wsae_jax.models.topk import TopKSAEConfig

__all__ = [
  "ARCHITECTURES",
  "Architecture",
  "BatchTopKSAEConfig",
  "GatedSAEConfig",
  "Hyperparameter",
  "JumpReLUSAEConfig",
  "MatryoshkaBatchTopKSAEConfig",
  "Params",
  "ReLUSAEConfig",
  "SAEConfig",
  "TiedSAEConfig",
  "TopKSAEConfig",
  "config_from_dict",
  "decode",
  "decoder_matrix",
  "encode",
  "for_saelens",
  "forward",
  "get",
  "init",
  "kth_largest_mask",
  "make_config",
  "num_params",
  "pre_activations",
  "sae_loss",
  "topk_activation",
  "with_hyperparameters",
]

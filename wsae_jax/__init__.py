"""wsae-jax: weighted sparse autoencoders (WSAE) in JAX.

Modules, one idea each:
  superposition  the paper's data model (sparse features seen through W_p)
  sae            the SAE family (tied theory SAE, ReLU+L1, Top-k+AuxK)
  losses         pure weighted losses, `loss(...) -> (scalar, aux)`
  weights        per-dimension weights γ = s^α (variance, semantic consistency)
  optim          optax transformations for decoder constraints; the optimiser chain
  parallel       device meshes and shardings for data parallelism
  data           batch sources (synthetic on-device, arrays, iterables)
  activations    the on-disk activation store (shuffled, prefetched, bounded-memory batches)
  harvest        activations from a Hugging Face causal LM (optional extra: torch, transformers)
  rdata          a reader for R lazy-load databases (corpora shipped as R packages)
  train          TrainConfig, TrainState, the jitted step and the training loop
  metrics        matching, MMCS, MCC, L_GT, features per latent, shrinkage, FVU, L0
  closed_form    the paper's analytic SAE (Thm 1), loss identities (Thm 4/5), grid solver
"""

from wsae_jax import closed_form
from wsae_jax._validate import WSAEInputError
from wsae_jax.activations import ActivationStore, ActivationWriter
from wsae_jax.data import ArraySource, IterableSource, SyntheticSource, as_source
from wsae_jax.losses import reconstruction_loss, sae_loss
from wsae_jax.metrics import evaluate, match_latents, mcc, mmcs
from wsae_jax.parallel import data_mesh
from wsae_jax.sae import (ReLUSAEConfig, TiedSAEConfig, TopKSAEConfig, decode, encode,
                          make_config)
from wsae_jax.superposition import (observe, polygon_matrix, random_matrix, sample_features,
                                    toy_model_matrix)
# `train` stays the module (wsae_jax.train.train is the loop), so it is not shadowed here.
from wsae_jax import train
from wsae_jax.train import History, TrainConfig, TrainState, make_train_step
from wsae_jax.weights import consistency_weights, semantic_consistency, variance_weights

__version__ = "0.1.0"

__all__ = [
    "closed_form", "ActivationStore", "ActivationWriter", "ArraySource", "History", "IterableSource", "ReLUSAEConfig", "SyntheticSource",
    "TiedSAEConfig", "TopKSAEConfig", "TrainConfig", "TrainState", "WSAEInputError", "as_source",
    "consistency_weights", "data_mesh", "decode", "encode", "evaluate", "make_config",
    "make_train_step", "match_latents", "mcc", "mmcs", "observe", "polygon_matrix",
    "random_matrix", "reconstruction_loss", "sae_loss", "sample_features",
    "semantic_consistency", "toy_model_matrix", "train", "variance_weights",
]

"""wsae-jax: weighted sparse autoencoders (WSAE) in JAX.

The library (importable in a notebook; prints nothing, plots nothing, knows no machine's paths):
  data         the paper's data model, named W_p problems, batch sources, the on-disk activation store
  models       one file per SAE architecture (tied, relu, topk, jumprelu, batchtopk) and the registry
  objectives   the weighted reconstruction loss and the per-dimension weights γ
  theory       the paper's closed-form SAE, loss identities and grid solver
  training     the optimiser, the jitted step and loop, compiled sweeps, the run lifecycle
  storage      orbax checkpoints, SAELens folders, JSON records
  evaluation   metrics, scoring of trained SAEs, paired statistics
  parallel     device meshes and shardings (used by training and the theory's grid solver)
  lm           language-model activations (optional `harvest` extra): harvesting, corpora
The application (`wsae` command): app (cli, demo, sweep files, plots).

Shape letters, used the same way in every module (`x_BxD` is a batch of inputs):
  B  rows of a batch                     D  input dimension d_in (= n_p for synthetic data)
  M  latents d_sae                       K  active latents per row (Top-k's k)
  N  true features n                     P  observed dimensions n_p (rows of W_p)
  E  members of a sweep                  T  steps run by one compiled call
  U  distinct data streams of a sweep    R  distinct data seeds of a sweep
  G  geometries of a closed-form grid    A  weightings (γ vectors) of a closed-form grid
  S  sparsities of a closed-form grid
  C  a chunk of rows or members processed together
"""

from typing import TYPE_CHECKING

from wsae_jax import _lazy
from wsae_jax._validate import WSAEInputError

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each is imported on first use
  from wsae_jax import data, evaluation, models, objectives, parallel, storage, theory, training
  from wsae_jax.data.sources import ArraySource, IterableSource, SyntheticSource, as_source
  from wsae_jax.data.store import ActivationStore, ActivationWriter
  from wsae_jax.data.superposition import (
    observe,
    polygon_matrix,
    random_matrix,
    sample_features,
    toy_model_matrix,
  )
  from wsae_jax.evaluation.metrics import evaluate, match_latents, mcc, mmcs
  from wsae_jax.models import (
    BatchTopKSAEConfig,
    GatedSAEConfig,
    JumpReLUSAEConfig,
    MatryoshkaBatchTopKSAEConfig,
    ReLUSAEConfig,
    TiedSAEConfig,
    TopKSAEConfig,
    decode,
    encode,
    make_config,
    sae_loss,
  )
  from wsae_jax.objectives.reconstruction import reconstruction_loss
  from wsae_jax.objectives.weights import (
    consistency_weights,
    semantic_consistency,
    variance_weights,
  )
  from wsae_jax.parallel import data_mesh, training_mesh
  from wsae_jax.storage.saelens import load_saelens, save_saelens
  from wsae_jax.theory import closed_form
  from wsae_jax.training.trainer import History, TrainConfig, TrainState, make_train_step, train

_SUBMODULES = (
  "data",
  "evaluation",
  "models",
  "objectives",
  "parallel",
  "storage",
  "theory",
  "training",
)
_NAMES = {
  "ArraySource": "wsae_jax.data.sources",
  "IterableSource": "wsae_jax.data.sources",
  "SyntheticSource": "wsae_jax.data.sources",
  "as_source": "wsae_jax.data.sources",
  "ActivationStore": "wsae_jax.data.store",
  "ActivationWriter": "wsae_jax.data.store",
  "observe": "wsae_jax.data.superposition",
  "polygon_matrix": "wsae_jax.data.superposition",
  "random_matrix": "wsae_jax.data.superposition",
  "sample_features": "wsae_jax.data.superposition",
  "toy_model_matrix": "wsae_jax.data.superposition",
  "evaluate": "wsae_jax.evaluation.metrics",
  "match_latents": "wsae_jax.evaluation.metrics",
  "mcc": "wsae_jax.evaluation.metrics",
  "mmcs": "wsae_jax.evaluation.metrics",
  "BatchTopKSAEConfig": "wsae_jax.models",
  "GatedSAEConfig": "wsae_jax.models",
  "JumpReLUSAEConfig": "wsae_jax.models",
  "MatryoshkaBatchTopKSAEConfig": "wsae_jax.models",
  "ReLUSAEConfig": "wsae_jax.models",
  "TiedSAEConfig": "wsae_jax.models",
  "TopKSAEConfig": "wsae_jax.models",
  "decode": "wsae_jax.models",
  "encode": "wsae_jax.models",
  "make_config": "wsae_jax.models",
  "sae_loss": "wsae_jax.models",
  "reconstruction_loss": "wsae_jax.objectives.reconstruction",
  "consistency_weights": "wsae_jax.objectives.weights",
  "semantic_consistency": "wsae_jax.objectives.weights",
  "variance_weights": "wsae_jax.objectives.weights",
  "data_mesh": "wsae_jax.parallel",
  "training_mesh": "wsae_jax.parallel",
  "load_saelens": "wsae_jax.storage.saelens",
  "save_saelens": "wsae_jax.storage.saelens",
  "closed_form": "wsae_jax.theory",
  "History": "wsae_jax.training.trainer",
  "TrainConfig": "wsae_jax.training.trainer",
  "TrainState": "wsae_jax.training.trainer",
  "make_train_step": "wsae_jax.training.trainer",
  "train": "wsae_jax.training.trainer",
}
__getattr__, __dir__ = _lazy.attach(__name__, globals(), _SUBMODULES, _NAMES)

__version__ = "0.1.0"

__all__ = [
  "ActivationStore",
  "ActivationWriter",
  "ArraySource",
  "BatchTopKSAEConfig",
  "GatedSAEConfig",
  "History",
  "IterableSource",
  "JumpReLUSAEConfig",
  "MatryoshkaBatchTopKSAEConfig",
  "ReLUSAEConfig",
  "SyntheticSource",
  "TiedSAEConfig",
  "TopKSAEConfig",
  "TrainConfig",
  "TrainState",
  "WSAEInputError",
  "as_source",
  "closed_form",
  "consistency_weights",
  "data",
  "data_mesh",
  "decode",
  "encode",
  "evaluate",
  "evaluation",
  "load_saelens",
  "make_config",
  "make_train_step",
  "match_latents",
  "mcc",
  "mmcs",
  "models",
  "objectives",
  "observe",
  "parallel",
  "polygon_matrix",
  "random_matrix",
  "reconstruction_loss",
  "sae_loss",
  "sample_features",
  "save_saelens",
  "semantic_consistency",
  "storage",
  "theory",
  "toy_model_matrix",
  "train",
  "training_mesh",
  "training",
  "variance_weights",
]

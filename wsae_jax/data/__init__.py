"""Data: the paper's data model, named problems, batch sources and the on-disk activation store.

superposition  sparse features seen through W_p (`sample_features`, `polygon_matrix`, ...)
problems       the named W_p geometries (polygon, random, toy) and the held-out data step
sources        batch sources: batch t is a function of (seed, t)
store          the on-disk activation store (shuffled, prefetched, bounded-memory batches)
synthbench     SynthSAEBench's ground truth (SAELens's synthetic model law), sampled on device
"""

from typing import TYPE_CHECKING

from wsae_jax import _lazy

if TYPE_CHECKING:
  from wsae_jax.data import problems, sources, store, superposition, synthbench  # noqa: F401

# Each submodule is imported on first use (`wsae train --help` reads `problems` without JAX).
__getattr__, __dir__ = _lazy.attach(
  __name__, globals(), ("problems", "sources", "store", "superposition", "synthbench")
)

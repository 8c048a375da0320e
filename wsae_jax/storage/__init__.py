"""Storage: orbax checkpoints of training states, SAELens folders, JSON records, the run folder's
lock and claim.

checkpoint  orbax checkpoints (atomic saves, keep K)
saelens     SAELens folders both ways, written as a unit
records     JSON and every atomic file / folder write (`OutputWriteError`)
lock        one writer per run folder
run_folder  `RunFolder`: claim a folder under its lock, refuse mixing, resume or overwrite

Each is imported on first use: reading an activation store or a record does not load orbax or
the architectures.
"""

from typing import TYPE_CHECKING

from wsae_jax import _lazy

if TYPE_CHECKING:
  from wsae_jax.storage import checkpoint, lock, records, run_folder, saelens  # noqa: F401

__getattr__, __dir__ = _lazy.attach(
  __name__, globals(), ("checkpoint", "lock", "records", "run_folder", "saelens")
)

"""Storage: orbax checkpoints of training states, SAELens folders, JSON records."""

from wsae_jax.storage import checkpoint, records, saelens  # noqa: F401

"""Theory: the paper's closed-form SAE (Thm 1), its loss identities (Thm 4/5) and a grid solver."""

from wsae_jax.theory import closed_form  # noqa: F401

"""Language-model activations (the `harvest` extra: torch, transformers): harvesting a causal LM's
residual stream into an activation store, and corpora shipped offline (R lazy-load databases)."""

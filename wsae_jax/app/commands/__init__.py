"""One module per `wsae` command: `add(sub)` builds its options, `execute(args)` calls the library
and prints. Each imports what its work needs inside `run`, so that `wsae --help` and any
command's `--help` load no JAX they do not use (issue #28)."""

# One line per command, shown by `wsae --help` (which builds no command's options).
COMMAND_HELP = {
  "demo": "train an SAE and a WSAE on a superposition problem; write demo.json + demo.png",
  "theory": "closed-form diagnostics (shrinking, vanishing, identifiability) for a geometry",
  "sweep": "train a whole hyperparameter sweep as one compiled program",
  "train": "train one SAE (synthetic or from an activation file), checkpointed and resumable",
  "export": "write the newest checkpoint of a run as a SAELens folder",
  "eval": "score an SAE on held-out activations: FVU, L0, dead/dense latents, token statistics, k-sparse probing, LM loss recovered",
  "harvest": "write a causal LM's residual stream on a text corpus as an activation store",
  "report": "write one self-contained HTML page about a run, a SAELens folder or a sweep: metrics, curves, γ, latents with their top contexts, true features, Pareto front",
}

"""`wsae theory`: the closed-form diagnostics of a geometry, printed (and written as JSON)."""

from __future__ import annotations

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import Help, add_problem, make_problem


def add(sub):
  p = sub.add_parser(
    "theory",
    help=COMMAND_HELP["theory"],
    description="Runs closed_form.diagnose on a chosen superposition geometry: per true feature, "
    "the expected shrinkage E[x_m,j/x_j | x_j>0] and vanishing probability P(x_m,j=0 | x_j>0) of "
    "the paper's closed-form SAE, its L_SAE, L_GT and the Thm 4/5 gap, and which identifiability "
    "conditions hold.",
    formatter_class=Help,
  )
  add_problem(p)
  p.add_argument("--sparsity", type=float, default=0.9, help="feature sparsity S in [0, 1)")
  p.add_argument("--d-sae", type=int, default=None, help="SAE width (default: n)")
  p.add_argument(
    "--alpha",
    type=float,
    default=None,
    help="weight the loss with the model's variance weights γ = s^α (default: plain SAE)",
  )
  p.add_argument("--samples", type=int, default=100_000, help="Monte-Carlo samples")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed")
  p.add_argument("--json", default=None, help="also write the diagnosis to this JSON file")
  p.set_defaults(func=execute)


def execute(args):
  import json

  import jax
  import numpy as np

  from wsae_jax.theory import closed_form

  V.check_range("sparsity", args.sparsity, low=0.0, high=1.0, high_open=True)
  if args.json:  # checked before the Monte-Carlo work, not after
    import pathlib

    if pathlib.Path(args.json).is_dir():
      raise V.WSAEInputError(f"--json {args.json!r} is a folder; pass a file path.")
    V.check_writable_dir(pathlib.Path(args.json).absolute().parent, "--json folder")
  key = jax.random.key(args.seed)
  problem = make_problem(args, args.seed)
  W, labels = problem.matrix(), problem.feature_labels()
  n = W.shape[1]
  gamma = (
    None if args.alpha is None else np.asarray(closed_form.model_variance_weights(W, args.alpha))
  )
  d = closed_form.diagnose(
    W,
    args.sparsity,
    args.d_sae or n,
    key=jax.random.fold_in(key, 1),
    num_samples=args.samples,
    gamma=gamma,
  )
  c = d["conditions"]
  print(
    f"W_p {W.shape}, S={args.sparsity}, d_sae={c['d_sae']}, {d['num_samples']} samples"
    + ("" if gamma is None else f", γ = s^{args.alpha}")
  )
  print(
    f"closed form: L_SAE={d['l_sae']:.6g}  L_GT={d['l_gt']:.6g}  gap={d['gap']:.6g}  "
    f"Thm 4/5 predicted gap={d['predicted_gap']:.6g}"
  )
  print(
    f"conditions: extreme sparsity {'yes' if c['extreme_sparsity'] else 'no'} "
    f"(P(>=2 active)={c['p_two_or_more_active']:.3g}); d_sae >= n "
    f"{'yes' if c['enough_latents'] else 'no'} ({c['d_sae']} vs {c['n']}); non-positive "
    f"interference {'yes' if c['nonpositive_interference'] else 'no'} "
    f"(max w_i·w_j={c['max_interference']:.3g}, coherence={c['mutual_coherence']:.3g})"
  )
  print(f"\n{'feature':>16} {'shrinkage':>10} {'vanishing':>10}")
  for lab, s_j, v_j in zip(labels, d["shrinkage"], d["vanishing"]):
    print(f"{lab:>16} {s_j:>10.4f} {v_j:>10.4f}")
  if args.json:
    out = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
    out["W_p"] = np.asarray(W).tolist()
    try:
      with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    except OSError as e:
      raise V.WSAEInputError(
        f"--json {args.json!r} cannot be written ({e.strerror or e})."
      ) from None
    print(f"\nwrote {args.json}")

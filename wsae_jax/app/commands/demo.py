"""`wsae demo`: the paper's SAE-vs-WSAE comparison on a superposition problem."""

from __future__ import annotations

from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import ARCHITECTURES, Help, floats


def add(sub):
  from wsae_jax.app.demo import GEOMETRIES, DemoConfig

  d = DemoConfig()
  p = sub.add_parser(
    "demo",
    help=COMMAND_HELP["demo"],
    description="Builds a superposition problem (n_p = 20 observed dimensions), trains a plain SAE "
    "and a weighted SAE (γ_i = Var(x_p,i)^α) at each sparsity, prints a table of L_SAE, L_GT, "
    "MMCS, features per latent, shrinkage and vanishing, and writes demo.json and demo.png.",
    formatter_class=Help,
  )
  p.add_argument("--out", default=d.out, help="output folder (created if missing)")
  p.add_argument(
    "--geometry",
    choices=GEOMETRIES,
    default=d.geometry,
    help="W_p: triangles in 2-D planes + 4 monosemantic dims (n=28), a trained "
    "Elhage toy model (n=40), or random unit directions (n=40)",
  )
  p.add_argument(
    "--sparsities",
    type=floats,
    default=d.sparsities,
    help="comma-separated feature sparsities S in [0, 1)",
  )
  p.add_argument("--alpha", type=float, default=d.alpha, help="WSAE exponent α >= 0")
  p.add_argument(
    "--arch",
    dest="architecture",
    choices=ARCHITECTURES,
    default=d.architecture,
    help="SAE architecture (tied = the paper's theory SAE)",
  )
  p.add_argument("--steps", type=int, default=d.steps, help="training steps per SAE")
  p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
  p.add_argument(
    "--lr",
    dest="learning_rate",
    type=float,
    default=d.learning_rate,
    help="peak Adam learning rate",
  )
  p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per sparsity and model")
  p.add_argument("--eval-samples", type=int, default=d.eval_samples, help="held-out samples")
  p.add_argument("--no-progress", action="store_true", help="hide progress bars")
  p.set_defaults(func=execute)


def execute(args):
  from wsae_jax.app import demo

  fields = {
    f: getattr(args, f)
    for f in (
      "out",
      "geometry",
      "sparsities",
      "alpha",
      "architecture",
      "steps",
      "batch_size",
      "learning_rate",
      "seeds",
      "eval_samples",
    )
  }
  demo.run_demo(demo.DemoConfig(**fields), progress=not args.no_progress)

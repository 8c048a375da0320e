"""The `wsae` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import argparse
import sys

from wsae_jax import _validate as V


def _floats(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _add_demo(sub):
  from wsae_jax.demo import GEOMETRIES, DemoConfig
  d = DemoConfig()
  p = sub.add_parser(
      "demo", help="train an SAE and a WSAE on a superposition problem; write demo.json + demo.png",
      description="Builds a superposition problem (n_p = 20 observed dimensions), trains a plain SAE "
      "and a weighted SAE (γ_i = Var(x_p,i)^α) at each sparsity, prints a table of L_SAE, L_GT, "
      "MMCS, features per latent, shrinkage and vanishing, and writes demo.json and demo.png.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--out", default=d.out, help="output folder (created if missing)")
  p.add_argument("--geometry", choices=GEOMETRIES, default=d.geometry,
                 help="W_p: triangles in 2-D planes + 4 monosemantic dims (n=28), a trained "
                 "Elhage toy model (n=40), or random unit directions (n=40)")
  p.add_argument("--sparsities", type=_floats, default=d.sparsities,
                 help="comma-separated feature sparsities S in [0, 1)")
  p.add_argument("--alpha", type=float, default=d.alpha, help="WSAE exponent α >= 0")
  p.add_argument("--arch", dest="architecture", choices=("tied", "relu", "topk"),
                 default=d.architecture, help="SAE architecture (tied = the paper's theory SAE)")
  p.add_argument("--steps", type=int, default=d.steps, help="training steps per SAE")
  p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
  p.add_argument("--lr", dest="learning_rate", type=float, default=d.learning_rate,
                 help="peak Adam learning rate")
  p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per sparsity and model")
  p.add_argument("--eval-samples", type=int, default=d.eval_samples, help="held-out samples")
  p.add_argument("--no-progress", action="store_true", help="hide progress bars")
  p.set_defaults(func=_run_demo)


def _run_demo(args):
  from wsae_jax import demo
  fields = {f: getattr(args, f) for f in ("out", "geometry", "sparsities", "alpha", "architecture",
                                          "steps", "batch_size", "learning_rate", "seeds",
                                          "eval_samples")}
  demo.run(demo.DemoConfig(**fields), progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="wsae",
      description="Weighted sparse autoencoders in JAX. Each subcommand has its own --help.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  _add_demo(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    args.func(args)
  except V.WSAEInputError as e:
    print(f"wsae {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

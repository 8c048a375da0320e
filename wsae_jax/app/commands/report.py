"""`wsae report`: one self-contained HTML page about a run, a SAELens folder or a sweep."""

from __future__ import annotations

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import EXIT_STATUS_DOC, Help


def add(sub):
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
    formatter_class=Help,
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
  p.set_defaults(func=execute)


def execute(args):
  import pathlib

  from wsae_jax.app import report
  from wsae_jax.training import workdir

  path = pathlib.Path(args.path)
  out = pathlib.Path(args.out) if args.out else path / workdir.REPORT
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

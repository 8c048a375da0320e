"""`wsae export`: a run's newest checkpoint as a SAELens folder."""

from __future__ import annotations

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import Help


def add(sub):
  p = sub.add_parser("export", help=COMMAND_HELP["export"], formatter_class=Help)
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
  p.set_defaults(func=execute)


def execute(args):
  import pathlib

  import jax

  from wsae_jax.storage import lock, saelens
  from wsae_jax.training import run as run_lib
  from wsae_jax.training import workdir

  run_dir = pathlib.Path(args.run)
  if not (run_dir / workdir.CHECKPOINTS).is_dir():
    raise V.WSAEInputError(
      f"{str(run_dir)!r} is not a run folder of `wsae train` (it has no checkpoints/ folder)."
    )
  target = pathlib.Path(args.out) if args.out else run_dir / workdir.EXPORT
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
  with lock.folder_lock(run_dir):
    cfg, params, meta = run_lib.load_params(run_dir / workdir.CHECKPOINTS)
    out = saelens.save_saelens(
      target,
      cfg,
      jax.device_get(params),
      normalization_scale=meta.get("normalization_scale"),
      standardization=meta.get("standardization"),
      metadata=saelens.metadata_from_data(meta.get("data")),
    )
  print(f"exported step {meta['step']} of {run_dir} to {out}")

"""`wsae sweep`: a sweep file's grid trained as one compiled program."""

from __future__ import annotations

import argparse
import sys

from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import add_resume_overwrite


def add(sub):
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
  add_resume_overwrite(
    p,
    "continue from the newest complete checkpoint in the output folder",
    "delete an earlier sweep's checkpoints and results in the output folder first",
  )
  p.add_argument(
    "--latent-shards",
    type=int,
    default=1,
    metavar="N",
    help="split each member's latents (and Adam state) over N devices, the members over the "
    "devices / N groups; N must divide the device count and d_sae",
  )
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=execute)


def execute(args):
  from wsae_jax.app import sweep_file

  res, _ = sweep_file.run_sweep_file(
    args.config,
    progress=not args.no_progress,
    resume=args.resume,
    overwrite=args.overwrite,
    latent_shards=args.latent_shards,
  )
  if res.diverged:
    print(
      f"wsae sweep: {len(res.diverged)} member(s) diverged (member: step) {res.diverged}; "
      f"their rows hold the last finite state.",
      file=sys.stderr,
    )
    return 1
  return 0

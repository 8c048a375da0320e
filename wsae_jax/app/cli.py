"""The `wsae` command line: the parser, the `--config` file, the dispatch and the exit statuses.
Each command's options and work live in `wsae_jax.app.commands.<command>`."""

from __future__ import annotations

import argparse
import importlib
import sys

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import EXIT_WRITE_FAILED


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
    "earlier outputs and checkpoints are untouched), 130 / 143 after Ctrl-C / SIGTERM (the step "
    "reached is checkpointed and the command that resumes it printed).",
  )
  parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name in COMMAND_HELP:
    if only is None or name == only:
      importlib.import_module(f"wsae_jax.app.commands.{name}").add(sub)
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


def _resume_command(argv, args) -> str:
  """The command line that continues an interrupted run: the same options, with `--resume`
  instead of `--overwrite` for the commands that have it (`wsae harvest` resumes by itself)."""
  import shlex

  again = [a for a in argv if a != "--overwrite"]
  if hasattr(args, "resume") and "--resume" not in again:
    again.append("--resume")
  return shlex.join(["wsae", *again])


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
  from wsae_jax.training.preemption import Interrupted

  try:
    return args.func(args) or 0
  except Interrupted as e:
    again = f"; continue with: {_resume_command(argv, args)}" if e.saved else ""
    print(f"wsae {args.command}: {e}{again}", file=sys.stderr)
    return e.exit_status
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

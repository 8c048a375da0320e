"""Progress of the commands that do not train (`wsae eval`, `wsae report`): one bar over named
stages (reading, encoding, scoring, probing, ...), on stderr, off with `--no-progress`."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from tqdm.auto import tqdm


class Stages:
  """A bar over `names`; calling it with a stage's name marks the previous stage done."""

  def __init__(self, names: Sequence[str], *, desc: str, enabled: bool = True):
    self.names = list(names)
    self.bar = tqdm(
      total=len(self.names),
      desc=desc,
      unit="stage",
      disable=not enabled,
      leave=False,
      bar_format="{desc}: {n}/{total} stages |{bar:20}| {postfix}",
    )
    self.current: str | None = None

  def __call__(self, name: str) -> None:
    if self.current is not None:
      self.bar.update()
    self.current = name
    self.bar.set_postfix_str(name)

  def close(self) -> None:
    if self.current is not None:
      self.bar.update()
    self.bar.close()


@contextlib.contextmanager
def stages(names: Sequence[str], *, desc: str, enabled: bool = True) -> Iterator[Stages]:
  s = Stages(names, desc=desc, enabled=enabled)
  try:
    yield s
  finally:
    s.close()

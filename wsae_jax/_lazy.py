"""Lazy package attributes (PEP 562): a package names its submodules and re-exported names, and
each is imported on first use. `wsae --help` and other commands that never touch JAX then start
without importing it (issue #28); `import wsae_jax as w; w.train(...)` works as before."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def attach(
  package: str,
  namespace: dict,
  submodules: tuple[str, ...] = (),
  names: dict[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list]]:
  """`(__getattr__, __dir__)` for `package`, whose module dict is `namespace`.

  `submodules`: names of `package.<name>` modules; `names`: re-exported name -> the module that
  defines it. The first access imports the module and caches the value in `namespace`.
  """
  names = dict(names or {})
  subs = frozenset(submodules)

  def __getattr__(name: str) -> Any:
    if name in subs:
      value = importlib.import_module(f"{package}.{name}")
    elif name in names:
      value = getattr(importlib.import_module(names[name]), name)
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    namespace[name] = value
    return value

  def __dir__() -> list:
    return sorted(set(namespace) | subs | set(names))

  return __getattr__, __dir__

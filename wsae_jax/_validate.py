"""Input checks shared by every public entry point: fail early, name the problem and the fix."""

from __future__ import annotations

import numbers
import sys
import typing
from typing import Any

import numpy as np


class WSAEInputError(ValueError):
  """Bad input to a wsae_jax function. A `ValueError`, so `except ValueError` catches it."""


def is_concrete(x: Any) -> bool:
  """True when `x` holds values we can look at (not a tracer inside jit/vmap). JAX is not
  imported for this: without JAX loaded there are no tracers."""
  jax = sys.modules.get("jax")
  return jax is None or not isinstance(x, jax.core.Tracer)


def check_rank(name: str, x: Any, rank: int, *, hint: str = "") -> None:
  ndim = np.ndim(x)
  if ndim != rank:
    raise WSAEInputError(
      f"{name} must have rank {rank}, got shape {tuple(np.shape(x))} (rank {ndim})."
      + (f" {hint}" if hint else "")
    )


def check_float(name: str, x: Any) -> None:
  dtype = np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
  if not np.issubdtype(dtype, np.floating) and str(dtype) != "bfloat16":
    raise WSAEInputError(
      f"{name} must be a floating-point array, got dtype {dtype}. "
      f"Convert it with x.astype(np.float32)."
    )


def check_finite(name: str, x: Any) -> None:
  """Raises if a concrete array holds NaN or inf (tracers are skipped)."""
  if not is_concrete(x):
    return
  arr = np.asarray(x)
  if arr.dtype.kind == "f" or str(arr.dtype) == "bfloat16":
    bad = ~np.isfinite(arr.astype(np.float32) if str(arr.dtype) == "bfloat16" else arr)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise WSAEInputError(
        f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); the first is at "
        f"index {idx}. Clean or drop those rows before training."
      )


def check_matrix(name: str, x: Any, *, shape: tuple[int | None, ...] | None = None) -> None:
  check_float(name, x)
  if shape is not None:
    check_rank(name, x, len(shape))
    for axis, (want, got) in enumerate(zip(shape, np.shape(x))):
      if want is not None and want != got:
        raise WSAEInputError(
          f"{name} has shape {tuple(np.shape(x))}, but axis {axis} must be {want} "
          f"(expected shape {tuple('*' if s is None else s for s in shape)})."
        )
  check_finite(name, x)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise WSAEInputError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
  value = int(value)
  if low is not None and value < low:
    raise WSAEInputError(f"{name} must be >= {low}, got {value}.")
  if high is not None and value > high:
    raise WSAEInputError(f"{name} must be <= {high}, got {value}.")


def check_range(
  name: str,
  value: Any,
  *,
  low: float | None = None,
  high: float | None = None,
  low_open: bool = False,
  high_open: bool = False,
) -> None:
  """Checks a concrete scalar (or every entry of a concrete array) lies in a range."""
  if not is_concrete(value):
    return
  arr = np.asarray(value, dtype=np.float64)
  lo = "(" if low_open else "["
  hi = ")" if high_open else "]"
  allowed = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
  bad = ~np.isfinite(arr)
  if low is not None:
    bad |= (arr <= low) if low_open else (arr < low)
  if high is not None:
    bad |= (arr >= high) if high_open else (arr > high)
  if bad.any():
    seen = arr[bad].ravel()[0] if arr.ndim else float(arr)
    raise WSAEInputError(f"{name} must lie in {allowed}, got {seen!r}.")


def check_gamma(gamma: Any, d_in: int, name: str = "gamma") -> None:
  """γ must be a finite, strictly positive vector of length d_in."""
  if gamma is None:
    return
  check_float(name, gamma)
  if np.shape(gamma) != (d_in,):
    raise WSAEInputError(
      f"{name} must have shape ({d_in},) (one weight per input dimension), "
      f"got shape {tuple(np.shape(gamma))}."
    )
  check_range(name, gamma, low=0.0, low_open=True)


# -- schemas of the files the library reads ------------------------------------------------------


def _type_name(t) -> str:
  if typing.get_origin(t) in (tuple, list):
    return f"a list of {_type_name(typing.get_args(t)[0]).removeprefix('an ').removeprefix('a ')}s"
  return (
    "null"
    if t is type(None)
    else {
      "int": "an integer",
      "float": "a number",
      "bool": "true or false",
      "str": "a string",
      "list": "a list",
      "dict": "a table",
    }.get(t.__name__, t.__name__)
  )


def _matches(value: Any, types: tuple) -> bool:
  for t in types:
    if t is type(None) and value is None:
      return True
    if t is bool and isinstance(value, bool):
      return True
    if t is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
      return True
    if t is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
      return True
    origin = typing.get_origin(t)
    if origin in (tuple, list):  # `tuple[int, ...]`: a JSON/TOML list or a tuple of such items
      item = typing.get_args(t)[0]
      if isinstance(value, (list, tuple)) and all(_matches(v, (item,)) for v in value):
        return True
      continue
    if t not in (bool, int, float, type(None)) and isinstance(value, t):
      return True
  return False


def check_fields(
  where: str,
  obj: Any,
  required: dict[str, Any],
  optional: dict[str, Any] | None = None,
  *,
  allow_unknown: bool = False,
) -> dict:
  """Checks a parsed JSON/TOML table against a schema; returns it.

  `required` and `optional` map field names to a type or a tuple of types (`int` excludes booleans,
  `float` accepts integers, `type(None)` allows null). Raises `WSAEInputError` naming `where` and the
  field: a missing required field, a value of the wrong type, or (unless `allow_unknown`) a field
  the schema does not know, with the allowed ones listed.
  """
  optional = optional or {}
  if not isinstance(obj, dict):
    raise WSAEInputError(
      f"{where} must be a table (a JSON object / TOML table), got "
      f"{type(obj).__name__} {_short(obj)}."
    )
  for name in required:
    if name not in obj:
      raise WSAEInputError(f"{where}: the required field {name!r} is missing.")
  allowed = {**required, **optional}
  for name, value in obj.items():
    if name not in allowed:
      if allow_unknown:
        continue
      raise WSAEInputError(
        f"{where}: unknown field {name!r}; allowed fields: {', '.join(sorted(allowed))}."
      )
    types = allowed[name] if isinstance(allowed[name], tuple) else (allowed[name],)
    if not _matches(value, types):
      raise WSAEInputError(
        f"{where}: field {name!r} must be "
        f"{' or '.join(_type_name(t) for t in types)}, got {_short(value)} "
        f"({type(value).__name__})."
      )
  return obj


def _short(value: Any, n: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= n else text[:n] + "…"


def dataclass_schema(cls) -> tuple[dict, dict]:
  """`(required, optional)` field types of a dataclass, from its annotations (simple types only)."""
  import dataclasses
  import types as _types
  import typing

  hints = typing.get_type_hints(cls)
  required: dict = {}
  optional: dict = {}
  for f in dataclasses.fields(cls):
    if not f.init:
      continue
    t = hints[f.name]
    if typing.get_origin(t) in (typing.Union, _types.UnionType):
      t = tuple(typing.get_args(t))
    (
      optional
      if (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
      else required
    )[f.name] = t
  return required, optional


def build_dataclass(cls, mapping: Any, where: str):
  """`cls(**mapping)` after checking names and types against `cls`'s fields (see `check_fields`)."""
  required, optional = dataclass_schema(cls)
  check_fields(where, mapping, required, optional)
  try:
    return cls(**mapping)
  except WSAEInputError as e:
    raise WSAEInputError(f"{where}: {e}") from None


def check_writable_dir(path, what: str = "output folder", fix: str = "") -> None:
  """Creates `path` if needed and checks a file can be written in it, before any work starts."""
  import os
  import pathlib
  import tempfile

  path = pathlib.Path(path)
  hint = f" {fix}" if fix else ""
  if path.exists() and not path.is_dir():
    raise WSAEInputError(f"{what} {str(path)!r} is a file, not a folder; pass a folder path.{hint}")
  try:
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".wsae-write-check-", dir=path)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise WSAEInputError(
      f"{what} {str(path)!r} cannot be written ({e.strerror or e}); choose a "
      f"writable folder or fix its permissions.{hint}"
    ) from None

"""JSON records: values made JSON-safe, and files written atomically."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np


def jsonable(v):
  """A JSON-safe version of one value (arrays to lists, numpy scalars to Python numbers)."""
  if isinstance(v, (np.ndarray, jax.Array)):
    return np.asarray(v).tolist()
  if isinstance(v, (np.floating, np.integer, np.bool_)):
    return v.item()
  if isinstance(v, tuple):
    return list(v)
  return v


def clean(d):
  """`jsonable` applied through nested dicts and lists."""
  if isinstance(d, dict):
    return {k: clean(v) for k, v in d.items()}
  if isinstance(d, (list, tuple)):
    return [clean(v) for v in d]
  return jsonable(d)


def write_json(path, obj, *, indent: int = 2) -> None:
  """Writes `obj` as JSON atomically (a temporary file renamed over the target)."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(clean(obj), indent=indent))
  os.replace(tmp, path)

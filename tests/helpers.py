"""The one tolerance helper the tests use, and the `wsae train` run the process tests start."""

import jax
import numpy as np


def assert_close(actual, expected, rtol=1e-6, atol=1e-6, err_msg=""):
  """Elementwise closeness of two pytrees of arrays (lists and scalars count as one array)."""
  if isinstance(expected, (list, float, int, np.ndarray, np.generic, jax.Array)):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  a_leaves, a_tree = jax.tree.flatten(actual)
  e_leaves, e_tree = jax.tree.flatten(expected)
  assert a_tree == e_tree, f"tree structures differ: {a_tree} vs {e_tree}"
  for a, e in zip(a_leaves, e_leaves):
    np.testing.assert_allclose(
      np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol, err_msg=err_msg
    )


def relu_train_options(out, *, steps: int) -> list[str]:
  """`wsae train` options (after the command name) of a small ReLU run with a checkpoint every
  100 steps: what the process tests (kill, signal, resume) start, long enough to interrupt."""
  return [
    "--out",
    str(out),
    "--arch",
    "relu",
    "--planes",
    "3",
    "--mono",
    "2",
    "--steps",
    str(steps),
    "--batch-size",
    "256",
    "--checkpoint-every",
    "100",
    "--log-every",
    "100",
    "--no-progress",
  ]

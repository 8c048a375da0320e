"""The `>>>` examples in the library's docstrings run and print what they say."""

import doctest
import importlib
import pathlib

import pytest

import wsae_jax

ROOT = pathlib.Path(wsae_jax.__file__).parent
MODULES = sorted(
  ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
  for p in ROOT.rglob("*.py")
  if ">>> " in p.read_text()
)


def test_the_library_has_examples():
  assert len(MODULES) >= 4


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0, result

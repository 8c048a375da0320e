"""The package's layout rules, checked on its source: no import cycle, the library prints and plots
nothing, and only the architecture files decide anything by architecture."""

import ast
import pathlib

import pytest

import wsae_jax as w

ROOT = pathlib.Path(w.__file__).parent
LIBRARY_EXCLUDED = ("app",)  # the application may print and plot


def _modules():
  for path in sorted(ROOT.rglob("*.py")):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


MODULES = {name: (path, tree) for name, path, tree in _modules()}


def _imports(name, tree):
  """Every wsae_jax module `name` imports, at module level or inside functions."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("wsae_jax")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsae_jax"):
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        out.add(sub if sub in MODULES else node.module)
  return {m for m in out if m in MODULES and m != name}


def test_there_is_no_import_cycle():
  graph = {name: _imports(name, tree) for name, (_, tree) in MODULES.items()}
  # A package's __init__ that re-exports its own submodules is not a loop of the code: drop the
  # edges from a submodule up to its own package(s).
  for name, deps in graph.items():
    graph[name] = {d for d in deps if not name.startswith(d + ".")}
  state, stack = {}, []

  def visit(n):
    state[n] = "open"
    stack.append(n)
    for d in sorted(graph[n]):
      if state.get(d) == "open":
        cycle = stack[stack.index(d) :] + [d]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if d not in state:
        visit(d)
    stack.pop()
    state[n] = "done"

  for n in sorted(graph):
    if n not in state:
      visit(n)


def _library():
  return {
    n: t
    for n, (_, t) in MODULES.items()
    if not any(n.startswith(f"wsae_jax.{x}") for x in LIBRARY_EXCLUDED) and n != "wsae_jax.__main__"
  }


def test_the_library_prints_and_plots_nothing():
  for name, tree in _library().items():
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
        pytest.fail(f"{name}:{node.lineno} calls print()")
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        assert not any(n.startswith("matplotlib") for n in names), f"{name} imports matplotlib"


def test_only_architecture_files_compare_architecture_names():
  names = set(w.models.ARCHITECTURES)
  for mod, (_path, tree) in MODULES.items():
    if mod.startswith("wsae_jax.models"):
      continue
    for node in ast.walk(tree):
      if isinstance(node, ast.Compare):
        consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
        consts += [
          e
          for c in node.comparators
          if isinstance(c, (ast.Tuple, ast.List, ast.Set))
          for e in c.elts
          if isinstance(e, ast.Constant)
        ]
        hits = [c.value for c in consts if c.value in names]
        assert not hits, f"{mod}:{node.lineno} branches on architecture {hits}"
      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
        cls = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
        assert "SAEConfig" not in cls, f"{mod}:{node.lineno} branches on {cls}"


def test_each_concern_has_one_home():
  """Names that used to be defined twice are defined once."""
  defs = {}
  for mod, (_, tree) in MODULES.items():
    for node in tree.body:
      if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        defs.setdefault(node.name, []).append(mod)
      if isinstance(node, ast.Assign):
        for t in node.targets:
          if isinstance(t, ast.Name):
            defs.setdefault(t.id, []).append(mod)
  for name in (
    "make_optimizer",
    "DATA_AXIS",
    "HELD_OUT_STEP",
    "jsonable",
    "interference",
    "participation_ratio",
    "SyntheticProblem",
    "polygon_matrix",
  ):
    assert len(defs.get(name, [])) == 1, (name, defs.get(name))
  # No module shares its name with a function of the package (`train.train`, `closed_form.losses`).
  # The command modules are named after the commands they implement (`commands.train`) and hold
  # no function of that name.
  modules = {m.rsplit(".", 1)[-1] for m in MODULES if not m.startswith("wsae_jax.app.commands.")}
  public_functions = {n for n, where in defs.items() if not n.startswith("_")}
  assert not (modules & public_functions) - {"sweep_file"}, modules & public_functions


def test_the_run_layout_is_spelled_in_one_module():
  """A run folder's file names appear (as whole strings) only in `training.workdir`; every other
  module names them through its constants (`workdir.RECORD`, `workdir.HISTORY`, ...)."""
  from wsae_jax.training import workdir

  names = {workdir.RECORD, workdir.W_P, workdir.HISTORY, workdir.EVAL, workdir.REPORT}
  found = []
  roots = [ROOT, ROOT.parent / "experiments", ROOT.parent / "benchmarks"]
  for f in (f for r in roots if r.is_dir() for f in sorted(r.rglob("*.py"))):
    for node in ast.walk(ast.parse(f.read_text())):
      if isinstance(node, ast.Constant) and node.value in names:
        found.append(f"{f.relative_to(ROOT.parent)}:{node.lineno} {node.value}")
  assert all(x.startswith("wsae_jax/training/workdir.py:") for x in found), found
  assert len(found) == len(names)  # each defined once there


def test_the_lower_layers_import_nothing_above_them():
  """`objectives` and `models` are the house's ground floor: they import no data, training,
  storage or application module (the γ kinds, which read W_p, live in `training.gamma`)."""
  upper = ("wsae_jax.data", "wsae_jax.training", "wsae_jax.storage", "wsae_jax.app", "wsae_jax.lm")
  for name, (_, tree) in MODULES.items():
    if name.startswith(("wsae_jax.objectives", "wsae_jax.models")):
      up = sorted(m for m in _imports(name, tree) if m.startswith(upper))
      assert not up, (name, up)

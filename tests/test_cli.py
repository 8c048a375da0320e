import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wsae_jax.app import cli
from wsae_jax.app.commands import options


def test_help_lists_commands_and_options(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  assert "demo" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    cli.main(["demo", "--help"])
  out = capsys.readouterr().out
  for opt in ("--out", "--geometry", "--sparsities", "--alpha", "--arch", "--steps", "--seeds"):
    assert opt in out


def test_tiny_demo_writes_json_and_png(tmp_path):
  rc = cli.main(
    [
      "demo",
      "--out",
      str(tmp_path),
      "--steps",
      "40",
      "--sparsities",
      "0.9",
      "--eval-samples",
      "256",
      "--batch-size",
      "64",
      "--no-progress",
    ]
  )
  assert rc == 0
  result = json.loads((tmp_path / "demo.json").read_text())
  assert {r["model"] for r in result["rows"]} == {"SAE", "WSAE"}
  for r in result["rows"]:
    assert r["l_gt"] >= 0 and 0 <= r["mmcs"] <= 1
  assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_cli_input_is_a_clear_error(tmp_path, capsys):
  assert cli.main(["demo", "--out", str(tmp_path), "--sparsities", "1.5"]) == 2
  assert "sparsity must lie in [0.0, 1.0)" in capsys.readouterr().err


def test_console_script_entry_point():
  out = subprocess.run(
    [sys.executable, "-m", "wsae_jax", "--help"], capture_output=True, text=True, check=True
  ).stdout
  assert "Weighted sparse autoencoders" in out
  for name, line in cli.COMMAND_HELP.items():
    assert name in out and line.split()[0] in out


def test_help_and_version_do_not_import_jax():
  """`wsae --help` / `--version` build no command's options, and the commands' own --help reads
  names and defaults from modules that import JAX only where they use it (#28). (`demo` and
  `sweep` take their defaults from application modules that do import it.)"""
  commands = ["theory", "train", "export", "eval", "harvest", "report"]
  code = (
    "import sys\nfrom wsae_jax.app import cli\n"
    f"for argv in (['--help'], ['--version']) + tuple([c, '--help'] for c in {commands}):\n"
    "  try:\n    cli.main(argv)\n  except SystemExit as e:\n    assert e.code == 0\n"
    "print('jax' in sys.modules, 'wsae_jax.models' in sys.modules)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  ).stdout
  assert out.strip().splitlines()[-1] == "False False"
  assert "wsae 0.1.0" in out


def test_reading_a_store_or_a_record_loads_no_checkpointer_or_architecture():
  """`storage` imports its modules on first use like the other package faces: a notebook that
  reads an activation store or writes a record does not load orbax or the SAE registry."""
  code = (
    "import sys\nimport wsae_jax.data.store, wsae_jax.storage.records\n"
    "from wsae_jax import storage\nstorage.records\n"
    "print('orbax.checkpoint' in sys.modules, 'wsae_jax.models' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False False"


def test_cli_architecture_names_are_the_registry():
  from wsae_jax import models

  assert options.ARCHITECTURES == tuple(sorted(models.ARCHITECTURES))


def test_a_command_builds_only_its_own_options():
  parser = cli.build_parser(only="export")
  sub = next(a for a in parser._actions if a.dest == "command")
  assert sub.choices["export"]._actions[-1].dest != "help"  # export: options built
  assert [a.dest for a in sub.choices["train"]._actions] == ["help"]  # train: listed only


def test_theory_prints_per_feature_table(tmp_path, capsys):
  out_json = tmp_path / "d.json"
  assert (
    cli.main(
      [
        "theory",
        "--planes",
        "2",
        "--polygon-k",
        "2",
        "--mono",
        "1",
        "--sparsity",
        "0.5",
        "--samples",
        "4096",
        "--json",
        str(out_json),
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "plane 1 #1" in out and "mono 0" in out and "non-positive interference yes" in out
  d = json.loads(out_json.read_text())
  assert len(d["shrinkage"]) == 5
  assert d["vanishing"][-1] == 0.0  # the monosemantic feature never vanishes
  # A digon pair: whenever both are active, the smaller one vanishes.
  assert 0.2 < d["vanishing"][0] < 0.5


def test_sweep_file_runs_and_writes_results(tmp_path, capsys):
  cfg = tmp_path / "s.toml"
  cfg.write_text(f"""
[sae]
architecture = "topk"
d_sae = 16
[train]
steps = 20
batch_size = 64
log_every = 10
[data]
geometry = "polygon"
planes = 2
polygon_k = 3
mono = 2
[grid]
seed = [0, 1]
k = [2, 3]
sparsity = [0.9]
[output]
dir = "{tmp_path / "out"}"
""")
  assert cli.main(["sweep", str(cfg), "--no-progress"]) == 0
  rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
  assert [r["k"] for r in rows] == [2, 3, 2, 3]
  assert all(r["l0"] <= r["k"] for r in rows)
  assert (tmp_path / "out" / "sweep.csv").exists() and (tmp_path / "out" / "sweep.png").exists()
  # Resuming a finished sweep restores its last checkpoint and gives the same table.
  assert cli.main(["sweep", str(cfg), "--no-progress", "--resume"]) == 0
  again = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
  assert [r["mse"] for r in again] == [r["mse"] for r in rows]
  # Each member's latents split over 2 devices (2 members at a time): the same table; a count that
  # does not divide d_sae is refused before the output folder is touched.
  split = cfg.read_text().replace(str(tmp_path / "out"), str(tmp_path / "split"))
  cfg.write_text(split)
  assert cli.main(["sweep", str(cfg), "--no-progress", "--latent-shards", "2"]) == 0
  assert "each member's latents split over 2" in capsys.readouterr().out
  shards = json.loads((tmp_path / "split" / "sweep.json").read_text())["rows"]
  np.testing.assert_allclose([r["mse"] for r in shards], [r["mse"] for r in rows], rtol=1e-4)
  cfg.write_text(split.replace("d_sae = 16", "d_sae = 18").replace("split", "split3"))
  assert cli.main(["sweep", str(cfg), "--no-progress", "--latent-shards", "4"]) == 2
  assert "d_sae = 18 cannot be split over 4 latent shards" in capsys.readouterr().err
  assert not (tmp_path / "split3").exists()


def test_sweep_file_on_synthbench(tmp_path, capsys):
  cfg = tmp_path / "s.toml"
  cfg.write_text(f"""
[sae]
architecture = "topk"
d_sae = 32
[train]
steps = 10
batch_size = 64
log_every = 5
[data]
synthbench = "cpu"
[grid]
k = [2, 4]
[output]
dir = "{tmp_path / "out"}"
""")
  assert cli.main(["sweep", str(cfg), "--no-progress"]) == 0
  rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
  assert [r["synthbench_sae_l0"] for r in rows] == [2.0, 4.0]  # Top-k: k on every held-out row
  assert all(0 <= r["synthbench_f1_score"] <= 1 and 0 < r["synthbench_mcc"] <= 1 for r in rows)
  assert all(r["gt_l_gt"] > 0 and -1 <= r["gt_mcc"] <= 1 for r in rows)  # our readings beside
  bad = cfg.read_text().replace('"cpu"', '"8k"')
  cfg.write_text(bad.replace(str(tmp_path / "out"), str(tmp_path / "out2")))
  assert cli.main(["sweep", str(cfg), "--no-progress"]) == 2
  assert "synthbench must be one of ['16k', 'cpu']" in capsys.readouterr().err
  assert not (tmp_path / "out2").exists()
  from wsae_jax.app import sweep_file

  shipped = pathlib.Path(__file__).parents[1] / "experiments/configs/synthbench_topk.toml"
  assert sweep_file.load_sweep_file(shipped)["data"] == {"synthbench": "cpu"}


def test_sweep_file_errors_are_clear(tmp_path, capsys):
  bad = tmp_path / "bad.toml"
  bad.write_text("[sae]\narchitecture = 'tied'\n[grid]\nseed=[0]\n")
  assert cli.main(["sweep", str(bad)]) == 2
  assert "the required field 'data' is missing" in capsys.readouterr().err
  assert cli.main(["sweep", str(tmp_path / "nope.toml")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_train_from_activation_store_folds_the_scale(tmp_path, capsys):
  import jax
  import numpy as np

  from wsae_jax import models
  from wsae_jax.data.store import ActivationStore, ActivationWriter
  from wsae_jax.storage import saelens as io
  from wsae_jax.training import run

  rng = np.random.default_rng(0)
  writer = ActivationWriter(tmp_path / "store", d_in=8, dtype="float16", context_len=16)
  for i in range(4):
    writer.write_shard(i, 30 * rng.standard_normal((64, 8)), tokens=rng.integers(0, 50, 64))
  rc = cli.main(
    [
      "train",
      "--out",
      str(tmp_path / "run"),
      "--activations",
      str(tmp_path / "store"),
      "--arch",
      "topk",
      "--k",
      "2",
      "--d-sae",
      "16",
      "--steps",
      "12",
      "--batch-size",
      "16",
      "--normalize",
      "--alpha",
      "0.5",
      "--checkpoint-every",
      "6",
      "--no-progress",
    ]
  )
  assert rc == 0
  out = capsys.readouterr().out
  assert "240 rows of d_in=8" in out and "normalisation scale" in out  # 4 x 64 minus 16 sinks
  store = ActivationStore(tmp_path / "store", 16, normalize=True)
  cfg, params, meta = run.load_params(tmp_path / "run" / "checkpoints")
  assert meta["normalization_scale"] == pytest.approx(store.scale)
  # The exported SAE takes raw activations: SAE_export(x) = SAE(c x) / c.
  cfg2, exported = io.load_saelens(tmp_path / "run" / "sae")
  x = store.read_all()[:32] / store.scale
  ref = models.forward(cfg, jax.device_get(params), x * store.scale)[1] / store.scale
  np.testing.assert_allclose(
    np.asarray(models.forward(cfg2, exported, x)[1]),
    np.asarray(ref),
    rtol=1e-4,
    atol=1e-4 * np.abs(ref).max(),
  )
  # A store with a NaN is refused before training starts.
  bad = np.load(tmp_path / "store" / "acts_00002.npy")
  bad[3, 1] = np.inf
  np.save(tmp_path / "store" / "acts_00002.npy", bad)
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(tmp_path / "run2"),
        "--activations",
        str(tmp_path / "store"),
        "--steps",
        "4",
        "--batch-size",
        "16",
        "--no-progress",
      ]
    )
    == 2
  )
  assert "acts_00002.npy" in capsys.readouterr().err


def test_every_architecture_hyperparameter_has_a_flag():
  from wsae_jax import models

  for arch in models.ARCHITECTURES.values():
    for h in arch.hyperparameters:
      assert h.name in options.HYPERPARAMETER_FLAGS, (arch.name, h.name)


@pytest.mark.parametrize(
  "arch, flags",
  [
    ("jumprelu", ["--l0", "0.01"]),
    ("batchtopk", ["--k", "2.5"]),
    ("matryoshka_batchtopk", ["--k", "2.5", "--d-sae", "20", "--matryoshka-widths", "4,20"]),
    ("gated", ["--l1", "0.01"]),
  ],
)
def test_train_and_export_the_new_architectures(tmp_path, arch, flags):
  """JumpReLU and BatchTopK end to end through the command line: train, checkpoint, export."""
  from wsae_jax.storage import saelens

  out = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(out),
        "--arch",
        arch,
        *flags,
        "--steps",
        "20",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "10",
        "--no-progress",
      ]
    )
    == 0
  )
  cfg, params = saelens.load_saelens(out / "sae")
  assert cfg.architecture == arch
  assert "threshold" in params or "b_gate" in params
  assert cli.main(["export", str(out), "--out", str(tmp_path / "again")]) == 0
  saved_as = json.loads((tmp_path / "again" / "cfg.json").read_text())["architecture"]
  assert saved_as == ("gated" if arch == "gated" else "jumprelu")  # as SAELens saves them
  # A flag meant for another architecture is refused, not ignored.
  stray = ["--l0", "0.1"] if arch == "gated" else ["--l1", "0.1"]
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(tmp_path / "bad"),
        "--arch",
        arch,
        *stray,
        "--steps",
        "2",
        "--no-progress",
      ]
    )
    == 2
  )
  if arch == "gated":
    assert (
      cli.main(
        [
          "train",
          "--out",
          str(tmp_path / "bad"),
          "--arch",
          arch,
          "--matryoshka-widths",
          "4,20",
          "--steps",
          "2",
          "--no-progress",
        ]
      )
      == 2
    )


@pytest.mark.parametrize("command", list(cli.COMMAND_HELP))
def test_help_shows_each_default_once(command, capsys):
  with pytest.raises(SystemExit):
    cli.main([command, "--help"])
  out = capsys.readouterr().out
  flat = " ".join(out.split())
  assert "%%" not in out and "(default: None)" not in flat
  for option_help in re.split(r"\n  -", out)[1:]:  # one block per option
    assert " ".join(option_help.split()).count("(default") <= 1, option_help
  if command == "train":
    for text in (
      "training steps (default: 2000)",
      "rows per step (default: 1024)",
      "peak Adam learning rate (default: 0.001)",
      "--warmup-steps",
      "--decay-fraction",
    ):
      assert text in flat, text


def test_warmup_and_decay_reach_the_run(tmp_path):
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--planes",
        "2",
        "--mono",
        "2",
        "--steps",
        "20",
        "--batch-size",
        "32",
        "--warmup-steps",
        "3",
        "--decay-fraction",
        "0.25",
        "--dtype",
        "bfloat16",
        "--no-progress",
      ]
    )
    == 0
  )
  tc = json.loads((run / "run.json").read_text())["train_config"]
  assert tc["warmup_steps"] == 3 and tc["decay_fraction"] == 0.25
  assert tc["compute_dtype"] == "bfloat16"


def _train_tiny(run, *options, steps: int = 30, log_every: int = 10) -> int:
  """`wsae train` of a tiny polygon problem (2 planes, 2 monosemantic dimensions) into `run`."""
  return cli.main(
    ["train", "--out", str(run), "--planes", "2", "--mono", "2", "--steps", str(steps)]
    + ["--batch-size", "32", "--log-every", str(log_every), *options, "--no-progress"]
  )


def test_tensorboard_gets_every_history_record(tmp_path):
  """--tensorboard DIR: the TensorBoard event file holds train/<metric> scalars at the history's
  steps with the history's values (read back with tensorboardX's own protobufs)."""
  pytest.importorskip("tensorboardX")
  import struct

  from tensorboardX.proto import event_pb2

  run, board = tmp_path / "run", tmp_path / "tb"
  assert _train_tiny(run, "--tensorboard", str(board)) == 0
  scalars = {}
  for f in board.glob("events.out.tfevents.*"):
    data = f.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += 12 + n + 4
      for v in ev.summary.value:
        scalars[(v.tag, ev.step)] = v.simple_value
  hist = json.loads((run / "history.json").read_text())["records"]
  assert [r["step"] for r in hist] == [10, 20, 30]
  for r in hist:
    assert scalars[("train/loss", r["step"])] == pytest.approx(r["loss"], rel=1e-6)
    assert scalars[("train/l0", r["step"])] == pytest.approx(r["l0"], rel=1e-6)


def test_wandb_gets_every_history_record(tmp_path, monkeypatch):
  """--wandb PROJECT: a W&B run (offline unless WANDB_MODE says otherwise) whose config is the
  run's record gets train/<metric> at each history step. W&B itself is replaced by a recorder
  (it is not in the test extra; `test_wandb_offline_run_is_written` uses the real one)."""
  import importlib.machinery
  import types

  calls = {"log": [], "finished": 0}

  class Run:
    def log(self, values, step):
      calls["log"].append((step, values))

    def finish(self):
      calls["finished"] += 1

  fake = types.ModuleType("wandb")
  fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
  fake.init = lambda **kw: calls.update(init=kw) or Run()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.delenv("WANDB_MODE", raising=False)
  run = tmp_path / "run"
  assert _train_tiny(run, "--wandb", "proj") == 0
  init = calls["init"]
  assert init["project"] == "proj" and init["mode"] == "offline" and init["dir"] == str(run)
  assert init["config"] == json.loads((run / "run.json").read_text())
  hist = json.loads((run / "history.json").read_text())["records"]
  assert [s for s, _ in calls["log"]] == [r["step"] for r in hist] == [10, 20, 30]
  for (_, values), r in zip(calls["log"], hist):
    assert values["train/loss"] == pytest.approx(r["loss"]) and "train/step" not in values
  assert calls["finished"] == 1


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.delenv("WANDB_MODE", raising=False)
  run = tmp_path / "run"
  assert _train_tiny(run, "--wandb", "proj", steps=4, log_every=2) == 0
  assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
  # --overwrite removes the old run's W&B files with the rest of it.
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--planes",
        "2",
        "--mono",
        "2",
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--overwrite",
        "--no-progress",
      ]
    )
    == 0
  )
  assert not (run / "wandb").exists()


def test_a_run_from_a_config_file_with_saelens_spellings(tmp_path, capsys):
  """`wsae train --config FILE` (TOML or JSON, keys as option names, SAELens's spellings too);
  the command line overrides the file; unknown keys and bad choices are refused by name."""
  cfg = tmp_path / "run.toml"
  cfg.write_text(
    'out = "%s"\narch = "topk"\nk = 3\nexpansion_factor = 2\n'
    "training_tokens = 640\nbatch-size = 32\nplanes = 2\nmono = 2\n"
    "no_progress = true\n" % (tmp_path / "run")
  )
  assert cli.main(["train", "--config", str(cfg), "--k", "2"]) == 0
  rec = json.loads((tmp_path / "run" / "run.json").read_text())
  assert rec["sae_config"]["architecture"] == "topk" and rec["sae_config"]["k"] == 2
  assert rec["sae_config"]["d_sae"] == 2 * rec["sae_config"]["d_in"] == 12
  assert rec["train_config"]["steps"] == 20 and rec["train_config"]["batch_size"] == 32
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"arch": "topk", "learning_rte": 0.1}))
  assert cli.main(["train", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
  assert "unknown option 'learning_rte'" in capsys.readouterr().err
  bad.write_text(json.dumps({"arch": "topkk"}))
  assert cli.main(["train", "--config", str(bad), "--out", str(tmp_path / "r3")]) == 2
  assert "arch must be one of" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(tmp_path / "r4"),
        "--d_sae",
        "8",
        "--expansion-factor",
        "2",
        "--planes",
        "2",
        "--mono",
        "2",
        "--steps",
        "2",
        "--no-progress",
      ]
    )
    == 2
  )
  assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize(
  "argv, hint",
  [
    (["train", "--out", "x", "--stpes", "3"], "--stpes: did you mean --steps?"),
    (["trian"], "did you mean 'train'?"),
    (["train", "--out", "x", "--arch", "topkk"], "did you mean 'topk'?"),
    (["eval", "x", "--eval-shrads", "2"], "did you mean --eval-shards?"),
  ],
)
def test_a_mistyped_option_or_choice_gets_a_suggestion(argv, hint, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2 and hint in capsys.readouterr().err


def test_sparse_path_option_reaches_the_config_and_is_refused_where_it_does_not_apply(tmp_path):
  """--sparse-path on trains BatchTopK through its sparse path (the saved config says so);
  off keeps Top-k dense; an architecture without one refuses the flag before any work."""

  for arch, extra, flag in (
    ("batchtopk", ["--k", "2.5", "--d-sae", "20"], "on"),
    ("topk", ["--k", "2", "--d-sae", "80"], "off"),
  ):
    run = tmp_path / arch
    assert _train_tiny(run, "--arch", arch, *extra, "--sparse-path", flag, steps=10) == 0
    cfg = json.loads((run / "sae" / "cfg.json").read_text())["wsae_jax"]["config"]
    assert cfg["sparse_path"] is (flag == "on"), cfg
  assert _train_tiny(tmp_path / "relu", "--arch", "relu", "--sparse-path", "on", steps=10) != 0
  assert not (tmp_path / "relu" / "sae").exists()


def test_latent_shards_train_record_the_mesh_and_resume_on_another_count(tmp_path, capsys):
  """--latent-shards 4 trains with the latents split over the 4 devices (run.json says the mesh);
  the run resumes with --latent-shards 2 from its checkpoint and ends where an unsplit run does
  (float32 rounding); a count that does not divide d_sae or the devices is refused before any
  file is written, naming the counts that fit."""
  import numpy as np

  from wsae_jax.storage import saelens

  split, whole = tmp_path / "split", tmp_path / "whole"
  opts = ["--arch", "topk", "--k", "2", "--d-sae", "32", "--checkpoint-every", "10"]
  assert _train_tiny(whole, *opts, steps=20) == 0
  assert _train_tiny(split, *opts, "--latent-shards", "4", steps=20) == 0
  assert json.loads((split / "run.json").read_text())["mesh"] == {
    "data": 1,
    "latent": 4,
    "platform": "cpu",
  }
  shutil.rmtree(split / "checkpoints" / "20")
  shutil.rmtree(split / "sae")
  assert _train_tiny(split, *opts, "--latent-shards", "2", "--resume", steps=20) == 0
  got, want = saelens.load_saelens(split / "sae")[1], saelens.load_saelens(whole / "sae")[1]
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
  capsys.readouterr()
  bad = tmp_path / "bad"
  assert (
    _train_tiny(bad, "--arch", "topk", "--k", "2", "--d-sae", "30", "--latent-shards", "4") != 0
  )
  assert "--latent-shards: d_sae = 30 cannot be split over 4" in capsys.readouterr().err
  assert _train_tiny(bad, "--arch", "topk", "--d-sae", "32", "--latent-shards", "3") != 0
  assert "use one of [1, 2, 4]" in capsys.readouterr().err
  assert not bad.exists() or not any(bad.iterdir())

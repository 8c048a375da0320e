"""Test set-up: 4 forced CPU devices, set before JAX starts, so 1-vs-4-device checks run anywhere."""

import os

# 4 virtual devices share 2 cores: under load one device's thread can reach a collective long
# after the others, and XLA:CPU aborts the process after 40 s by default. Allow 10 minutes.
_FLAGS = (
  "--xla_force_host_platform_device_count=4",
  "--xla_cpu_collective_timeout_seconds=600",
  "--xla_cpu_collective_call_terminate_timeout_seconds=600",
)
for _flag in _FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's compiled programs are kept on disk and shared by the test processes (both xdist workers
# and every `wsae` child process a test starts): the suite compiles the same training steps in
# many places, and a hit costs milliseconds where a compile costs up to seconds on 2 cores. The
# key hashes the program, the XLA flags and the JAX version, so a hit is the same executable.
# The LRU size bound makes JAX take a file lock around every read and write (no half-written
# entry is ever read by the other process). WSAE_TEST_XLA_CACHE=off compiles everything afresh.
if os.environ.get("WSAE_TEST_XLA_CACHE", "on") != "off":
  import importlib.util
  import tempfile

  os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"wsae-jax-test-xla-cache-{os.getuid()}"),
  )
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  if importlib.util.find_spec("filelock") is not None:  # the lock needs it (torch brings it)
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 2**30))
# torch (parity and harvest tests) shares the process: its OpenMP workers must sleep, not spin,
# between parallel regions, or they starve the 4 XLA device threads on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _module_rng_per_test(request):
  """A test module's `RNG` (a numpy Generator its tests draw from) restarts for every test from a
  seed of the test's own id, so what a test draws does not depend on which tests ran before it in
  its process (`pytest -n 2` splits modules between workers in no fixed order). Arrays a module
  draws at import keep their values."""
  import zlib

  import numpy as np

  module = request.module
  if isinstance(getattr(module, "RNG", None), np.random.Generator):
    module.RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def four_devices():
  devices = jax.devices()
  if len(devices) < 4:
    pytest.fail(
      f"tests need 4 devices; got {len(devices)}. Was JAX imported before conftest set XLA_FLAGS?"
    )
  return devices[:4]


@pytest.fixture()
def tiny_lm_store(tmp_path):
  """A tiny random Llama saved as a Hugging Face folder, and the store of its block-1 output on
  48 random contexts of 16 tokens (6 shards of 8 contexts)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import numpy as np

  from wsae_jax.lm import harvest as hv

  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
  )
  transformers.LlamaForCausalLM(cfg).eval().save_pretrained(tmp_path / "tiny")
  model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "tiny").eval()
  ids = np.random.default_rng(0).integers(0, 64, (48, 16)).astype(np.int32)
  hv.harvest_to_store(
    model, ids, 1, tmp_path / "store", contexts_per_shard=8, progress=False, info={"model": "tiny"}
  )
  return tmp_path / "tiny", tmp_path / "store"


@pytest.fixture
def logit_effects_run(tiny_lm_store, tmp_path):
  """A Top-k SAE trained on the tiny Llama's store and its report with --logit-effects:
  `(run folder, the LM's folder)`."""
  from wsae_jax.app import cli

  tiny, store = tiny_lm_store
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--activations",
        str(store),
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "10",
        "--batch-size",
        "32",
        "--hold-out-shards",
        "1",
        "--no-progress",
      ]
    )
    == 0
  )
  assert (
    cli.main(
      [
        "report",
        str(run),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--model",
        str(tiny),
        "--logit-effects",
        "--no-progress",
      ]
    )
    == 0
  )
  return run, tiny


# -- `wsae report` pages (tests/test_report.py and the browser tests) --
@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("syn") / "run"
  from wsae_jax.app import cli

  assert (
    cli.main(
      [
        "train",
        "--out",
        str(out),
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "60",
        "--batch-size",
        "64",
        "--no-progress",
        "--gamma",
        "oracle",
        "--alpha",
        "0.5",
      ]
    )
    == 0
  )
  assert cli.main(["report", str(out)]) == 0
  return out


@pytest.fixture(scope="session")
def tied_run(tmp_path_factory):
  """A tied theory SAE on the default synthetic problem, with its report: the model class the
  closed form is compared with."""
  out = tmp_path_factory.mktemp("tied") / "run"
  from wsae_jax.app import cli

  assert (
    cli.main(
      [
        "train",
        "--out",
        str(out),
        "--arch",
        "tied",
        "--steps",
        "60",
        "--batch-size",
        "64",
        "--no-progress",
      ]
    )
    == 0
  )
  assert cli.main(["report", str(out)]) == 0
  return out


@pytest.fixture(scope="session")
def store_run(tmp_path_factory):
  from wsae_jax.app import cli
  from wsae_jax.data.store import ActivationWriter

  tmp = tmp_path_factory.mktemp("store")
  import numpy as np

  rng = np.random.default_rng(1)
  writer = ActivationWriter(tmp / "store", d_in=8, dtype="float32", context_len=16)
  for i in range(4):
    tokens = rng.integers(0, 30, 64)
    x = rng.standard_normal((64, 8)) + np.eye(8)[tokens % 8] * 3  # tokens leave a trace
    writer.write_shard(i, x, tokens=tokens)
  run = tmp / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--activations",
        str(tmp / "store"),
        "--arch",
        "topk",
        "--k",
        "3",
        "--d-sae",
        "24",
        "--steps",
        "30",
        "--batch-size",
        "32",
        "--hold-out-shards",
        "1",
        "--no-progress",
      ]
    )
    == 0
  )
  assert (
    cli.main(["report", str(run), "--activations", str(tmp / "store"), "--eval-shards", "1"]) == 0
  )
  return run, tmp / "store"

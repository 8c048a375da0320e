"""The real-data training recipe: decoder bias from the data, massive-row dropping, per-dimension
standardization folded into the export, and the dead-latent window of `wsae train`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from scipy.optimize import minimize

import wsae_jax as w
from wsae_jax.app import cli
from wsae_jax.data import problems
from wsae_jax.data.store import ActivationStore, ActivationWriter
from wsae_jax.storage import saelens
from wsae_jax.training import data_init, sweep, trainer

RNG = np.random.default_rng(0)


def test_geometric_median_minimises_the_summed_distance():
  x = RNG.standard_normal((200, 5)) + np.array([3.0, -1.0, 0.0, 2.0, 5.0])
  m = data_init.geometric_median(x)
  ref = minimize(
    lambda p: np.linalg.norm(x - p, axis=1).sum(),
    x.mean(0),
    method="Nelder-Mead",
    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
  ).x
  assert_close(m, ref, atol=1e-4)
  # A few rows of huge norm move the mean far and the geometric median hardly at all.
  spiked = np.concatenate([x, np.full((5, 5), 1e4)])
  assert np.linalg.norm(data_init.geometric_median(spiked) - m) < 0.2
  assert np.linalg.norm(spiked.mean(0) - x.mean(0)) > 100
  assert_close(data_init.b_dec_init(x, "mean"), x.mean(0), rtol=1e-6)
  assert data_init.b_dec_init(x, "zeros") is None
  with pytest.raises(w.WSAEInputError, match="b_dec_init must be one of"):
    data_init.b_dec_init(x, "centroid")


def test_train_starts_b_dec_at_the_median_of_its_first_batches():
  x = (RNG.standard_normal((4096, 6)) + 4.0).astype(np.float32)
  cfg = w.TopKSAEConfig(d_in=6, d_sae=12, k=2)
  tc = w.TrainConfig(
    steps=1, batch_size=256, learning_rate=1e-9, warmup_steps=0, b_dec_init="median"
  )
  src = w.ArraySource(x, 256, seed=3)
  expected = data_init.geometric_median(trainer.initial_sample(src))
  state, _ = w.train(cfg, tc, w.ArraySource(x, 256, seed=3), progress=False)
  assert_close(state.params["b_dec"], expected, atol=1e-5)  # one step of lr 1e-9 moved it ~1e-9
  assert np.linalg.norm(expected - 4.0) < 0.3
  # The tied SAE has no decoder bias: the option leaves it alone.
  state, _ = w.train(w.TiedSAEConfig(d_in=6, d_sae=12), tc, x, progress=False)
  assert set(state.params) == {"W_enc"}
  with pytest.raises(w.WSAEInputError, match="can be read again"):
    w.train(cfg, tc, iter([x[:256]]), progress=False)


def test_sweep_members_start_b_dec_like_train(four_devices):
  W_p = w.polygon_matrix(3, 3, n_mono=2)
  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=3)
  tc = w.TrainConfig(
    steps=20, batch_size=64, learning_rate=3e-3, warmup_steps=2, log_every=10, b_dec_init="median"
  )
  members = [{"seed": 0, "sparsity": 0.8}, {"seed": 1, "sparsity": 0.6, "data_seed": 2}]
  res = sweep.train_sweep(
    cfg,
    tc,
    members,
    problems.SyntheticProblem(W_p),
    progress=False,
    mesh=sweep.sweep_mesh(2, four_devices[:1]),
  )
  one = w.data_mesh(four_devices[:1])
  for i, m in enumerate(members):
    src = w.SyntheticSource(W_p, m["sparsity"], 64, seed=m.get("data_seed", 0))
    state, _ = w.train(
      cfg, w.TrainConfig(**{**tc.__dict__, "seed": m["seed"]}), src, mesh=one, progress=False
    )
    assert_close(res.params(i), jax.device_get(state.params), rtol=1e-4, atol=2e-5)


@pytest.fixture()
def spiky_store(tmp_path):
  """3 shards of 64 rows (contexts of 8), with two massive rows per shard."""
  writer = ActivationWriter(tmp_path / "store", d_in=6, dtype="float32", context_len=8)
  rows = []
  for i in range(3):
    x = RNG.standard_normal((64, 6)) * np.array([1, 2, 3, 1, 1, 0.5]) + np.arange(6)
    x[5] *= 100
    x[17, 2] = 400
    writer.write_shard(i, x, tokens=RNG.integers(0, 50, 64))
    rows.append(x)
  return tmp_path / "store", np.concatenate(rows)


def test_massive_rows_are_dropped_and_counted(spiky_store):
  path, raw = spiky_store
  plain = ActivationStore(path, 16)
  store = ActivationStore(path, 16, max_norm_ratio=5.0)
  kept_positions = np.arange(len(raw)) % 8 != 0
  norms = np.linalg.norm(raw, axis=1)
  massive = norms > store.max_norm
  assert massive.sum() == store.dropped_rows == 6  # rows 5 and 17 of each shard
  assert store.n_tokens == plain.n_tokens - 6 == int((kept_positions & ~massive).sum())
  served = np.concatenate([store.host_batch(t) for t in range(store.steps_per_epoch)])
  assert np.linalg.norm(served, axis=1).max() <= store.max_norm
  assert_close(np.sort(store.read_all(), axis=0), np.sort(raw[kept_positions & ~massive], axis=0))
  assert store.describe()["max_norm_ratio"] == 5.0
  with pytest.raises(w.WSAEInputError, match="max_norm_ratio must lie in"):
    ActivationStore(path, 16, max_norm_ratio=0.5)


def test_standardized_rows_and_exclusive_options(spiky_store):
  path, _ = spiky_store
  store = ActivationStore(path, 16, standardize=True, max_norm_ratio=5.0, scale_rows=10_000)
  x = store.read_all()
  assert_close(x.mean(0), np.zeros(6), atol=1e-5)  # the sample is the whole store here
  assert_close(x.std(0), np.ones(6), atol=1e-5)
  with pytest.raises(w.WSAEInputError, match="exclusive"):
    ActivationStore(path, 16, standardize=True, normalize=True)


@pytest.mark.parametrize("arch", sorted(w.models.ARCHITECTURES))
def test_standardization_is_folded_into_the_export(arch, tmp_path):
  """The exported SAE on raw x gives the codes of the trained SAE on (x − μ)/σ, and its
  reconstruction is the trained one mapped back, x̂ = x̂'·σ + μ."""
  from test_sae import _random_params

  extra = {"topk": {"k": 3}, "batchtopk": {"k": 3.0}, "matryoshka_batchtopk": {"k": 3.0}}.get(
    arch, {}
  )
  cfg = w.make_config(arch, d_in=6, d_sae=10, **extra)
  p = _random_params(cfg)
  mu, sd = RNG.normal(0, 3, 6), RNG.uniform(0.2, 5, 6)
  saelens.save_saelens(tmp_path, cfg, p, standardization={"mean": mu.tolist(), "std": sd.tolist()})
  cfg2, p2 = saelens.load_saelens(tmp_path)
  x = (RNG.standard_normal((32, 6)) * sd + mu).astype(np.float32)
  z, x_hat = w.models.forward(cfg, p, ((x - mu) / sd).astype(np.float32))
  z2, x_hat2 = w.models.forward(cfg2, {k: jnp.asarray(v) for k, v in p2.items()}, x)
  assert_close(z2, z, rtol=1e-4, atol=1e-4)
  assert_close(x_hat2, np.asarray(x_hat) * sd + mu, rtol=1e-4, atol=1e-4)


def _train(tmp_path, name, *extra):
  return cli.main(
    [
      "train",
      "--out",
      str(tmp_path / name),
      "--no-progress",
      "--steps",
      "20",
      "--batch-size",
      "16",
      "--checkpoint-every",
      "10",
      *extra,
    ]
  )


def test_wsae_train_recipe_options(spiky_store, tmp_path, capsys):
  path, _ = spiky_store
  assert (
    _train(
      tmp_path,
      "run",
      "--activations",
      str(path),
      "--arch",
      "topk",
      "--k",
      "2",
      "--d-sae",
      "12",
      "--standardize",
      "--max-norm-ratio",
      "5",
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "dropped 6 rows with norm > 5 x the median" in out and "standardized" in out
  run = json.loads((tmp_path / "run" / "run.json").read_text())
  # The defaults for activations: b_dec at the geometric median, dead after 5% of the run.
  assert run["train_config"]["b_dec_init"] == "auto"
  assert run["sae_config"]["dead_after_tokens"] == max(16, int(0.05 * 20 * 16))
  assert set(run["standardization"]) == {"mean", "std"}
  # The export takes raw activations; `wsae export` folds the same standardization.
  store = ActivationStore(path, 16, standardize=True, max_norm_ratio=5.0)
  x = store.read_all()  # standardized
  mean, std = (np.asarray(store.standardization[k]) for k in ("mean", "std"))
  raw = x * std + mean
  cfg, params, meta = w.training.run.load_params(tmp_path / "run" / "checkpoints")
  ref = np.asarray(w.models.forward(cfg, jax.device_get(params), x)[1]) * std + mean
  for folder in ("sae", "exported"):
    if folder == "exported":
      assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / folder)]) == 0
      folder = tmp_path / folder
    else:
      folder = tmp_path / "run" / folder
    cfg2, p2 = saelens.load_saelens(folder)
    assert_close(w.models.forward(cfg2, p2, raw.astype(np.float32))[1], ref, rtol=1e-3, atol=1e-3)
  # Options that do not apply are refused, not ignored.
  assert (
    _train(
      tmp_path, "bad", "--activations", str(path), "--arch", "relu", "--dead-after-tokens", "100"
    )
    == 2
  )
  assert _train(tmp_path, "bad2", "--activations", str(path), "--normalize", "--standardize") == 2


def test_library_defaults_are_the_clis_recipe():
  # A notebook user gets what `wsae train` uses: the dead window at 5% of the run (at least a
  # batch, at most 10M tokens) and b_dec at the geometric median of the first rows.
  from wsae_jax.training import config as config_lib
  from wsae_jax.training import trainer
  from wsae_jax.training.data_init import geometric_median

  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=2)
  assert cfg.dead_after_tokens is None
  for steps, batch, want in ((20, 16, 16), (1000, 256, 12_800), (10**6, 4096, 10_000_000)):
    tc = w.TrainConfig(steps=steps, batch_size=batch)
    assert config_lib.resolve_run_defaults(cfg, tc).dead_after_tokens == want
  explicit = w.TopKSAEConfig(d_in=8, d_sae=16, k=2, dead_after_tokens=77)
  assert config_lib.resolve_run_defaults(explicit, tc) is explicit
  x = (np.random.default_rng(0).standard_normal((512, 8)) + 3.0).astype(np.float32)
  tc = w.TrainConfig(steps=4, batch_size=64, warmup_steps=1)
  source = w.data.sources.as_source(x, 64, seed=0)
  assert_close(
    trainer.data_b_dec(cfg, tc, source), geometric_median(trainer.initial_sample(source)), rtol=1e-5
  )
  # An iterable of batches cannot be read twice: "auto" falls back to zeros there.
  assert (
    trainer.data_b_dec(cfg, tc, w.data.sources.as_source(iter([x[:64]] * 4), 64, seed=0)) is None
  )
  res = w.training.sweep.train_sweep(cfg, tc, [{"seed": 0}], x, progress=False)
  assert res.sae_cfg.dead_after_tokens == 64

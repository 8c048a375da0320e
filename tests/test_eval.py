"""`wsae eval` and the evaluation modules behind it, against slow, obvious references."""

import json

import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.app import cli
from wsae_jax.data.store import ActivationStore, ActivationWriter
from wsae_jax.evaluation import activations, probing
from wsae_jax.storage import saelens

RNG = np.random.default_rng(0)


@pytest.fixture()
def store(tmp_path):
  writer = ActivationWriter(tmp_path / "store", d_in=8, dtype="float32", context_len=16)
  for i in range(4):
    x = RNG.standard_normal((64, 8)) + np.arange(8)
    x[7] *= 50  # a massive row per shard
    writer.write_shard(i, x, tokens=RNG.integers(0, 30, 64))
  return tmp_path / "store"


def test_scores_match_a_dense_numpy_reference():
  cfg = w.TopKSAEConfig(d_in=8, d_sae=40, k=3)
  from test_sae import _random_params

  p = {k: np.asarray(v) for k, v in _random_params(cfg).items()}
  x = (RNG.standard_normal((300, 8)) * 2).astype(np.float32)
  x[5] *= 40
  tokens = RNG.integers(0, 12, 300)
  s = activations.score(cfg, p, x, tokens, batch=64)  # several batches
  z, x_hat = (np.asarray(a, np.float64) for a in w.models.forward(cfg, p, x))
  fvu = np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2)
  norms = np.linalg.norm(x, axis=1)
  typ = norms <= 5 * np.median(norms)
  fvu_typ = np.sum((x[typ] - x_hat[typ]) ** 2) / np.sum((x[typ] - x[typ].mean(0)) ** 2)
  freq = (z > 0).mean(0)
  assert_close(s["fvu"], fvu, rtol=1e-4)
  assert_close(s["fvu_typical_rows"], fvu_typ, rtol=1e-4)
  assert s["massive_rows"] == int((~typ).sum()) >= 1
  assert_close(s["l0"], (z > 0).sum(1).mean(), rtol=1e-6)
  assert s["dead_frac"] == pytest.approx(np.mean(freq == 0))
  assert s["dense_frac"] == pytest.approx(np.mean(freq > 0.1))
  assert sum(s["firing_frequency_hist"]["counts"]) == int((freq > 0).sum())
  assert np.isfinite(s["token_consistency"])


def test_k_sparse_probing_finds_the_latent_that_carries_a_class():
  """Latent 7 fires exactly on tokens of class A: the 1-sparse probe picks it with F1 = 1; a
  class no latent sees stays near chance."""
  n, d_sae = 2000, 30
  tokens = RNG.integers(0, 20, n)
  in_a = np.isin(tokens, [3, 4, 5])
  lat = np.full((n, 3), -1)
  val = np.zeros((n, 3))
  lat[:, 0], val[:, 0] = RNG.integers(10, 30, n), RNG.uniform(0.5, 2, n)  # noise latents
  lat[in_a, 1], val[in_a, 1] = 7, RNG.uniform(1, 3, in_a.sum())
  x = RNG.standard_normal((n, 6))
  out = probing.k_sparse_probing(
    lat,
    val,
    x,
    tokens,
    {"A": frozenset({3, 4, 5}), "B": frozenset({11, 12, 13}), "rare": frozenset({99})},
    d_sae,
  )
  assert out["A"]["latents"]["1"] == [7] and out["A"]["k"]["1"] == 1.0
  assert out["B"]["k"]["1"] < 0.75 and out["B"]["raw_f1"] < 0.75
  assert out["rare"]["skipped"]
  assert probing.summary(out)["classes"] == 2


def test_logistic_probe_and_f1_against_references():
  x = RNG.standard_normal((400, 3))
  y = x @ np.array([2.0, -1.0, 0.0]) + 0.3 > 0
  predict = probing.logistic_probe(x, y)
  assert np.mean(predict(x) == y) > 0.97
  assert probing.f1_score([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
  assert probing.f1_score([0, 0], [0, 0]) == 1.0


def test_token_classes_from_strings():
  strings = {
    0: " Elizabeth",
    1: " happily",
    2: ",",
    3: "\n",
    4: " 1811",
    5: " the",
    6: " “",
    7: " Darcy",
  }
  c = probing.token_classes(strings)
  assert c["character_name"] == {0, 7} and c["ly_word"] == {1} and c["punctuation"] >= {2}
  assert c["newline"] == {3} and c["digit"] == {4} and c["opening_quote"] == {6}
  assert c["capitalised"] == {0, 7}


def test_wsae_eval_on_a_held_out_shard(store, tmp_path, capsys):
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
  trained = json.loads((run / "run.json").read_text())["data"]["shards"]
  assert "acts_00003.npy" not in trained and len(trained) == 3
  assert cli.main(["eval", str(run), "--activations", str(store), "--eval-shards", "1"]) == 0
  out = capsys.readouterr().out
  assert "FVU" in out and "dead latents" in out
  r = json.loads((run / "eval.json").read_text())
  assert r["shards"] == ["acts_00003.npy"] and r["rows"] == 60  # 64 minus 4 context starts
  cfg, p = saelens.load_saelens(run / "sae")
  x = ActivationStore(store, 1, shards=[3], shuffle=False).read_all()
  assert r["fvu"] == pytest.approx(activations.score(cfg, p, x)["fvu"], rel=1e-6)
  # A second eval does not overwrite the first one unless asked.
  assert cli.main(["eval", str(run), "--activations", str(store), "--eval-shards", "1"]) == 2
  assert (
    cli.main(
      [
        "eval",
        str(run / "sae"),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--out",
        str(tmp_path / "e2.json"),
      ]
    )
    == 0
  )


def test_wsae_eval_lm_loss_with_a_tiny_llama(tmp_path, capsys, tiny_lm_store):
  tiny, store = tiny_lm_store
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(tmp_path / "run"),
        "--activations",
        str(store),
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "20",
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
    cli.main(["eval", str(tmp_path / "run"), "--activations", str(store), "--eval-shards", "1"])
    == 0
  )
  # The store names no model found here: --lm-loss asks for --model.
  assert (
    cli.main(
      [
        "eval",
        str(tmp_path / "run"),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--lm-loss",
        "--overwrite",
      ]
    )
    == 2
  )
  assert "pass --model" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "eval",
        str(tmp_path / "run"),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--lm-loss",
        "--loss-contexts",
        "4",
        "--model",
        str(tiny),
        "--overwrite",
      ]
    )
    == 0
  )
  r = json.loads((tmp_path / "run" / "eval.json").read_text())
  assert r["lm_contexts"] == 4 and np.isfinite(r["loss_recovered"])
  assert r["lm_loss_zero_ablation"] != r["lm_loss_clean"]


def test_wsae_eval_of_a_synthetic_run_scores_its_own_held_out_problem(
  synthetic_run, tmp_path, capsys
):
  from wsae_jax.evaluation import metrics
  from wsae_jax.training import workdir

  out = tmp_path / "e.json"
  assert cli.main(["eval", str(synthetic_run), "--out", str(out)]) == 0
  assert "L_GT" in capsys.readouterr().out
  r = json.loads(out.read_text())
  cfg, p = saelens.load_saelens(synthetic_run / "sae")
  x, x_p, W, gamma = workdir.synthetic_held_out(synthetic_run)
  assert gamma is not None and len(gamma) == W.shape[0]  # the run's oracle γ
  ref = metrics.evaluate(cfg, p, x, W, gamma=gamma)
  assert r["ground_truth"]["l_gt"] == pytest.approx(ref["l_gt"], rel=1e-6)
  assert r["ground_truth"]["mmcs"] == pytest.approx(ref["mmcs"], rel=1e-6)
  assert r["fvu"] == pytest.approx(activations.score(cfg, p, x_p)["fvu"], rel=1e-6)
  # A store's scores need a store; a SAELens folder outside a run has no problem to sample.
  assert cli.main(["eval", str(synthetic_run), "--out", str(tmp_path / "f.json"), "--probe"]) == 2
  assert cli.main(["eval", str(synthetic_run / "sae"), "--out", str(tmp_path / "g.json")]) == 0
  import shutil

  shutil.copytree(synthetic_run / "sae", tmp_path / "lone")
  assert cli.main(["eval", str(tmp_path / "lone"), "--out", str(tmp_path / "i.json")]) == 2
  assert "pass --activations" in capsys.readouterr().err
  np.save(synthetic_run / "W_p.npy", np.load(synthetic_run / "W_p.npy") * 2)  # not the run's
  try:
    assert cli.main(["eval", str(synthetic_run), "--out", str(tmp_path / "h.json")]) == 2
    assert "SHA-1" in capsys.readouterr().err
  finally:
    np.save(synthetic_run / "W_p.npy", np.load(synthetic_run / "W_p.npy") / 2)

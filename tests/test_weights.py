import warnings

import jax
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.objectives import weights
from wsae_jax.training import gamma as gamma_lib

RNG = np.random.default_rng(0)


def test_variance_weights_match_numpy():
  x = RNG.standard_normal((500, 7)) * np.arange(1, 8)
  for alpha in (0.0, 0.5, 1.0, 2.0):
    g = weights.variance_weights(x, alpha, normalize=False)
    assert_close(g, np.var(x, axis=0) ** alpha, rtol=1e-5)
    gn = weights.variance_weights(x, alpha)
    assert_close(np.mean(gn.astype(np.float64) ** 2), 1.0, rtol=1e-6)
    assert_close(gn / gn[0], g / g[0], rtol=1e-5)
  assert_close(weights.variance_weights(x, 0.0), np.ones(7))
  # α < 0 (towards whitening): low-variance dimensions weighted up; α = −0.5 equalises the scales.
  g = weights.variance_weights(x, -0.5)
  ref = np.var(x, axis=0) ** -0.5
  assert_close(g, ref / np.sqrt(np.mean(ref**2)), rtol=1e-5)
  scaled = np.var(x * g.astype(np.float64), axis=0)
  assert_close(scaled, np.full(7, scaled[0]), rtol=1e-5)  # every dimension at one variance
  assert np.all(np.diff(g) < 0)


def test_only_the_variance_kinds_take_a_negative_alpha(tmp_path, capsys):
  from wsae_jax.app import cli
  from wsae_jax.training import run

  for kind in ("variance", "robust-variance"):
    assert gamma_lib.check_kind(kind, -0.5, synthetic=False).signed_alpha
  for kind in ("kurtosis", "zero-fraction", "oracle", "decoder"):
    with pytest.raises(w.WSAEInputError, match="alpha must lie in"):
      gamma_lib.check_kind(kind, -0.5, synthetic=True)
  base = ["train", "--planes", "4", "--mono", "2", "--steps", "4", "--batch-size", "64"]
  base += ["--no-progress", "--data-seed", "3"]
  assert (
    cli.main(base + ["--out", str(tmp_path / "k"), "--gamma", "kurtosis", "--alpha", "-1"]) == 2
  )
  assert "alpha must lie in" in capsys.readouterr().err
  out = tmp_path / "run"
  assert cli.main(base + ["--out", str(out), "--gamma", "variance", "--alpha", "-0.5"]) == 0
  _, _, meta = run.load_params(out / "checkpoints")
  W = w.polygon_matrix(4, 3, n_mono=2)
  src = w.SyntheticSource(W, 0.9, 64, seed=3)
  sample = np.asarray(src.sample(w.data.problems.HELD_OUT_STEP, 8192)[1], np.float64)
  ref = np.var(sample, axis=0) ** -0.5
  assert_close(meta["gamma"], ref / np.sqrt(np.mean(ref**2)), rtol=1e-4)


def _slow_consistency(f, labels, thr=1e-5):
  f = f / np.linalg.norm(f, axis=1, keepdims=True)
  out = []
  for d in range(f.shape[1]):
    lab = [labels[i] for i in range(f.shape[0]) if abs(f[i, d]) > thr]
    out.append(np.nan if not lab else max(lab.count(c) for c in set(lab)) / len(lab))
  return np.asarray(out)


def test_semantic_consistency_matches_slow_loop():
  f = RNG.standard_normal((60, 5)) * (RNG.random((60, 5)) > 0.5)
  f[:, 4] = 0.0
  f[0, 4] = 1.0  # dimension 4 active once: consistency 1
  f[f.sum(1) == 0, 0] = 1.0
  labels = RNG.integers(0, 3, 60)
  per_dim, mean = weights.semantic_consistency(f, labels)
  ref = _slow_consistency(f, labels)
  assert_close(per_dim, ref, rtol=1e-12)
  assert_close(mean, np.nanmean(ref), rtol=1e-12)
  g = weights.consistency_weights(f, labels, 1.0, normalize=False)
  assert_close(g, ref, rtol=1e-6)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: weights.variance_weights(np.ones((10, 3)), 1.0), "variance must be finite and > 0"),
    (lambda: weights.weights_from_polysemanticity(np.full(3, 2.0), -0.5), "alpha must lie in"),
    (lambda: weights.variance_weights(RNG.random((10, 3)), np.inf), "alpha must lie in"),
    (lambda: weights.variance_weights(RNG.random(10), 1.0), "rank 2"),
    (lambda: weights.variance_weights(np.full((4, 2), np.nan), 1.0), "non-finite"),
    (lambda: weights.variance_weights(np.ones((4, 2), np.int32), 1.0), "floating-point"),
    (
      lambda: weights.semantic_consistency(RNG.random((4, 2)), np.zeros(3, int)),
      "labels must have shape",
    ),
    (lambda: weights.as_gamma(np.array([1.0, 0.0, 2.0]), 3), "gamma must lie in"),
    (lambda: weights.as_gamma(np.ones(4), 3), r"gamma must have shape \(3,\)"),
  ],
)
def test_bad_weight_inputs_raise(call, match):
  with pytest.raises(w.WSAEInputError, match=match):
    call()


def test_gamma_report_measures_concentration():
  r = w.objectives.weights.gamma_report(np.ones(100))
  assert r.top_share == pytest.approx(0.01) and r.effective_dims == pytest.approx(100)
  assert r.top_1pct_share == pytest.approx(0.01) and not r.problems()
  g = np.ones(100)
  g[37] = 30.0  # γ² = 900 of 999
  r = w.objectives.weights.gamma_report(g)
  assert r.top_dim == 37 and r.top_share == pytest.approx(900 / 999)
  assert r.effective_dims == pytest.approx(999**2 / (900**2 + 99))
  assert any("dimension 37 holds 90.1%" in p for p in r.problems())


def test_variance_weights_warn_when_one_dimension_dominates():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2000, 50)).astype(np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    w.variance_weights(x, 1.0)  # balanced: no warning
  x[:, 7] *= 40.0  # one massive dimension
  with pytest.warns(RuntimeWarning, match="dimension 7 holds"):
    g = w.variance_weights(x, 1.0)
  np.testing.assert_allclose(np.mean(g.astype(np.float64) ** 2), 1.0, rtol=1e-5)  # still exact


def test_wsae_train_warns_naming_the_dimension_and_can_refuse(tmp_path, capsys):
  from wsae_jax.app import cli

  rng = np.random.default_rng(1)
  x = rng.standard_normal((1024, 16)).astype(np.float32)
  x[:, 3] *= 30.0
  np.save(tmp_path / "acts.npy", x)
  common = [
    "train",
    "--activations",
    str(tmp_path / "acts.npy"),
    "--steps",
    "4",
    "--batch-size",
    "64",
    "--alpha",
    "1",
    "--no-progress",
    "--d-sae",
    "32",
    "--arch",
    "relu",
  ]
  assert cli.main(common + ["--out", str(tmp_path / "r1")]) == 0
  out, err = capsys.readouterr()
  assert "γ: top dimension 3 holds" in out
  assert err.count("warning: γ (variance, α = 1.0): dimension 3 holds") == 1
  assert err.count("warning") == 1
  assert cli.main(common + ["--out", str(tmp_path / "r2"), "--gamma-max-share", "0.25"]) == 2
  assert "dimension 3 holds" in capsys.readouterr().err
  assert not (tmp_path / "r2" / "checkpoints").exists()


def test_a_negative_alpha_that_starves_the_dominant_dimension_is_said_before_training(
  tmp_path, capsys
):
  """α < 0 on a stream with one massive dimension (65% of the variance, as several models'
  residual streams have): Var^−0.5 gives every dimension the same share of the weighted loss,
  so the one carrying most of the signal gets 1/d_in of it. Warned, naming the dimension and
  both shares; a balanced stream, and α > 0 on this one, draw no such warning."""
  from wsae_jax.app import cli

  d = 36
  rng = np.random.default_rng(2)
  x = rng.standard_normal((4096, d)).astype(np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    w.variance_weights(x, -0.5)  # balanced: nothing to say
  x[:, 5] *= 8.0  # variance 64 of 64 + 35: 64.6%
  var = np.var(x.astype(np.float64), axis=0)
  v5 = var[5] / var.sum()
  assert 0.6 < v5 < 0.7
  with pytest.warns(RuntimeWarning) as caught:
    g = w.variance_weights(x, -0.5)
  said = [str(c.message) for c in caught if "variance but only" in str(c.message)]
  # Var^-0.5: γ²·Var = 1 for every dimension, so each holds exactly 1/d of the weighted loss.
  assert said == [
    f"variance weights (α = -0.5): dimension 5 holds {v5:.1%} of the activations' variance but "
    f"only {1 / d:.1%} of the weighted loss γ²·Var: the WSAE will barely reconstruct the "
    f"dimension that carries most of the signal, and its unweighted FVU can rise sharply. "
    f"Consider an α nearer 0, weights from typical rows, or dropping massive-activation rows."
  ]
  r = w.objectives.weights.gamma_report(g, var)
  assert r.neglected() == (5, pytest.approx(v5), pytest.approx(1 / d, rel=1e-4))
  assert w.objectives.weights.gamma_report(np.ones(d), var).neglected() is None  # plain SAE
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w.variance_weights(x, 0.5)  # weights the massive dimension up: not this warning
  assert not [c for c in caught if "variance but only" in str(c.message)]
  # `wsae train` says it once, before training, with the option that would refuse the run.
  np.save(tmp_path / "acts.npy", x)
  args = ["train", "--activations", str(tmp_path / "acts.npy"), "--steps", "2", "--no-progress"]
  args += ["--batch-size", "64", "--d-sae", "16", "--arch", "relu", "--alpha", "-0.5"]
  assert cli.main([*args, "--out", str(tmp_path / "run")]) == 0
  err = capsys.readouterr().err
  assert err.count("warning") == 1 and "dimension 5 holds 6" in err and "variance but only" in err
  assert "--alpha nearer 0." in err  # --gamma-max-share is about Σγ², not this: not offered


def _triangle_sample(sparsity, n=100_000, magnitude="uniform"):
  W = w.polygon_matrix(6, 3, n_mono=8)  # rows: 3, 2 or 1 features; participation ratio 2, 2, 1
  x = np.asarray(
    w.SyntheticSource(W, sparsity, 1, seed=0, magnitude=magnitude).sample(2**30, n)[1], np.float64
  )
  return W, x


def test_zero_fraction_counts_the_features_of_each_dimension():
  W, x = _triangle_sample(0.8)
  m = weights.zero_fraction_polysemanticity(x)
  nonzeros = (np.abs(W) > 1e-9).sum(axis=1)  # the oracle: features sharing each dimension
  assert_close(m, nonzeros, rtol=0.05, atol=0)
  g = weights.weights_from_polysemanticity(m, 1.0)
  assert g[-1] > g[0] and np.mean(g.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
  with pytest.raises(w.WSAEInputError, match="rel_tol > 0"):
    weights.zero_fraction_polysemanticity(RNG.standard_normal((100, 4)))
  dense = RNG.standard_normal((5000, 4))
  dense[:, 0] *= 0.0  # an exactly-zero (dead) column aside, nothing is ever zero: band needed
  m_tol = weights.zero_fraction_polysemanticity(
    dense + 1e-3 * RNG.standard_normal((5000, 4)), rel_tol=0.05
  )
  assert m_tol.shape == (4,) and np.all(m_tol >= 1)
  # A dead ReLU unit (always 0) neither sets Ŝ nor breaks the estimate: the others are unchanged.
  with_dead = np.concatenate([x, np.zeros((len(x), 1), x.dtype)], axis=1)
  m_dead = weights.zero_fraction_polysemanticity(with_dead)
  assert_close(m_dead[:-1], m, rtol=1e-12) and m_dead[-1] == 1.0


def test_kurtosis_estimates_the_participation_ratio():
  W, x = _triangle_sample(0.9, magnitude="constant")
  W2 = W.astype(np.float64) ** 2
  pr = W2.sum(1) ** 2 / (W2**2).sum(1)  # κ(Σ w_j x_j) = κ_1 Σw⁴/(Σw²)² = κ_1 / PR
  assert_close(weights.kurtosis_polysemanticity(x), pr, rtol=0.1, atol=0)


def test_robust_variance_ignores_massive_rows():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4000, 10))
  plain = weights.robust_variance_weights(x, 1.0)
  x[:5, 2] = 500.0  # five massive-norm rows on dimension 2
  with pytest.warns(RuntimeWarning, match="dimension 2 holds"):
    weights.variance_weights(x, 1.0)
  assert_close(weights.robust_variance_weights(x, 1.0), plain, rtol=0.02, atol=0)
  for kind in gamma_lib.SAMPLE_KINDS[:3]:
    assert gamma_lib.gamma_from_sample(kind, x, 0.5).shape == (10,)


@pytest.mark.parametrize("kind", ["robust-variance", "kurtosis", "zero-fraction", "oracle", "file"])
def test_wsae_train_takes_every_gamma_kind(kind, tmp_path, capsys):
  from wsae_jax.app import cli
  from wsae_jax.training import run

  gamma = ["--gamma", kind]
  if kind == "file":
    g = np.linspace(0.5, 1.5, 14).astype(np.float32)  # polygon 4 planes x 3 + 2 mono: n_p = 10
    np.save(tmp_path / "g.npy", g[:10])
    gamma = ["--gamma", str(tmp_path / "g.npy")]
  rc = cli.main(
    [
      "train",
      "--out",
      str(tmp_path / "run"),
      "--planes",
      "4",
      "--mono",
      "2",
      "--steps",
      "4",
      "--batch-size",
      "64",
      "--no-progress",
      "--arch",
      "relu",
      *gamma,
      *([] if kind == "file" else ["--alpha", "1"]),
    ]
  )
  assert rc == 0, capsys.readouterr().err
  assert "γ: top dimension" in capsys.readouterr().out
  _, _, meta = run.load_params(tmp_path / "run" / "checkpoints")
  saved = np.asarray(meta["gamma"])
  assert saved.shape == (10,) and np.all(saved > 0)
  if kind == "file":
    assert_close(saved, g[:10], rtol=1e-6, atol=0)
  if kind == "oracle":  # polygon rows: triangles' cos/sin rows have PR 2, the mono rows 1
    assert saved[-1] > saved[0]


def test_bad_gamma_options_are_refused(tmp_path, capsys):
  from wsae_jax.app import cli

  base = [
    "train",
    "--out",
    str(tmp_path / "run"),
    "--steps",
    "4",
    "--batch-size",
    "64",
    "--no-progress",
  ]
  assert cli.main(base + ["--gamma", "entropy", "--alpha", "1"]) == 2
  assert "--gamma: unknown γ kind 'entropy'; choose one of" in capsys.readouterr().err
  # A γ kind without --alpha would silently train the plain SAE: refused, naming the fix.
  assert cli.main(base + ["--gamma", "kurtosis"]) == 2
  assert "needs alpha" in capsys.readouterr().err
  np.save(tmp_path / "short.npy", np.ones(3, np.float32))
  assert cli.main(base + ["--gamma", str(tmp_path / "short.npy")]) == 2
  assert "must have shape (20,)" in capsys.readouterr().err
  np.save(tmp_path / "x.npy", np.ones((128, 4), np.float32))
  assert (
    cli.main(base + ["--gamma", "oracle", "--alpha", "1", "--activations", str(tmp_path / "x.npy")])
    == 2
  )
  assert "needs the synthetic W_p" in capsys.readouterr().err


def test_gamma_kinds_have_one_home(tmp_path):
  """Every kind the CLI, sweeps and `make_gamma` know is in `gamma_lib.KINDS`; each makes its γ."""
  from wsae_jax.app import cli
  from wsae_jax.objectives import weights

  assert set(gamma_lib.kind_names(synthetic=True)) == set(gamma_lib.KINDS)
  assert "oracle" not in gamma_lib.kind_names(synthetic=False)
  W = w.polygon_matrix(2, 3, n_mono=2)
  x = np.asarray(w.SyntheticSource(W, 0.7, 1, seed=0).sample(0, 4096)[1])
  for name, kind in gamma_lib.KINDS.items():
    g = gamma_lib.make_gamma(name, 1.0, sample=x, W_p=W, every=7)
    if kind.re_estimated:
      assert isinstance(g, weights.DecoderGamma) and g.every == 7
    else:
      assert g.shape == (6,) and np.isclose(np.mean(np.asarray(g, np.float64) ** 2), 1.0)
  pr = w.data.superposition.participation_ratio(W)
  np.testing.assert_allclose(
    gamma_lib.make_gamma("oracle", 1.0, W_p=W),
    weights.weights_from_scores(1.0 / pr, 1.0),
    rtol=1e-6,
  )
  # A .npy file is a kind too: γ itself, checked against d_in, no α.
  f = gamma_lib.kind_of(str(tmp_path / "g.npy"))
  assert not f.takes_alpha and f.needs == "file"
  with pytest.raises(w.WSAEInputError, match="is not a file"):
    f.check(None, synthetic=False)
  np.save(tmp_path / "g.npy", np.arange(1.0, 7.0))
  np.testing.assert_array_equal(f.check(None, synthetic=False).make(d_in=6), np.arange(1.0, 7.0))
  with pytest.raises(w.WSAEInputError, match="g.npy"):
    f.make(d_in=5)
  with pytest.raises(w.WSAEInputError, match="unknown γ kind 'g.txt'"):
    gamma_lib.kind_of("g.txt")
  parser = cli.build_parser(only="train")
  text = parser._subparsers._group_actions[0].choices["train"].format_help()
  for name in gamma_lib.KINDS:
    assert name in text


def test_decoder_polysemanticity_counts_the_latents_writing_to_each_dimension():
  w_dec = np.zeros((6, 4))
  w_dec[0, 0] = 1.0  # dimension 0: one latent
  w_dec[1:4, 1] = 0.5  # dimension 1: three latents, equally
  w_dec[4, 2], w_dec[5, 2] = 1.0, 0.1  # dimension 2: one latent and a faint second
  m = w.objectives.weights.decoder_polysemanticity(w_dec)
  ref = [np.sum(c**2) ** 2 / np.sum(c**4) if np.any(c) else 6.0 for c in w_dec.T]
  assert_close(m, ref, rtol=1e-12)
  assert m[0] == 1.0 and m[1] == pytest.approx(3.0) and 1.0 < m[2] < 1.1 and m[3] == 6.0
  live = np.array([True, False, False, True, True, True])
  assert w.objectives.weights.decoder_polysemanticity(w_dec, live)[1] == 1.0


def test_decoder_gamma_is_not_clipped_flat_on_a_wide_decoder():
  # REAL.md: on a 4,608-latent SAE every column spread over > 1,000 latents, the old shared clip
  # at 1,000 made γ = 1 exactly. The ceiling is now the number of live latents.
  rng = np.random.default_rng(0)
  w_dec = rng.normal(size=(3000, 4))
  w_dec[:, 0] *= np.where(np.arange(3000) < 300, 1.0, 0.05)  # dimension 0: ~300 latents own it
  m = w.objectives.weights.decoder_polysemanticity(w_dec)
  w2 = w_dec**2
  assert_close(m, (w2.sum(0) ** 2 / (w2**2).sum(0)), rtol=1e-12)
  assert m.max() > 1000 and m[0] < 0.5 * m[1:].min()
  gamma = w.objectives.weights.DecoderGamma(alpha=1.0).update(
    w_dec, np.zeros(3000), window_tokens=1
  )
  assert_close(gamma**2, np.mean(gamma**2) * (1 / m) ** 2 / np.mean((1 / m) ** 2), rtol=1e-6)
  assert gamma[0] > 1.5 * gamma[1:].max()


def test_train_takes_any_gamma_schedule_not_only_the_decoder_one(tmp_path):
  """`train` asks `weights.schedule_of`, not `isinstance(DecoderGamma)`: a user's own schedule is
  started, updated every `every` steps with the decoder and recorded."""
  from wsae_jax.storage.checkpoint import Checkpointer

  class Steps:
    every = 5

    def __init__(self):
      self.calls = []

    def describe(self):
      return {"kind": "steps", "every": self.every}

    def initial(self, d_in):
      return np.ones(d_in, np.float32)

    def update(self, w_dec_MxD, tokens_since_fired_M, window_tokens):
      self.calls.append((np.shape(w_dec_MxD), np.shape(tokens_since_fired_M), window_tokens))
      return np.linspace(0.5, 1.5, np.shape(w_dec_MxD)[1]).astype(np.float32) * len(self.calls)

  assert w.objectives.weights.schedule_of(np.ones(3)) is None
  assert w.objectives.weights.schedule_of(None) is None
  schedule = Steps()
  assert w.objectives.weights.schedule_of(schedule) is schedule
  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=3)
  tc = w.TrainConfig(steps=10, batch_size=32, learning_rate=3e-3, warmup_steps=2, log_every=5)
  w.train(
    cfg,
    tc,
    w.SyntheticSource(w.polygon_matrix(3, 3, n_mono=2), 0.8, 32, seed=1),
    gamma=schedule,
    progress=False,
    checkpointer=Checkpointer(tmp_path, every=10),
  )
  assert schedule.calls == [((16, 8), (16,), 5 * 32)] * 2
  meta = Checkpointer(tmp_path).read_meta(10)
  assert_close(meta["gamma_current"], 2 * np.linspace(0.5, 1.5, 8), rtol=1e-6)
  assert meta["gamma_schedule"] == {"kind": "steps", "every": 5}


def test_decoder_gamma_updates_during_training_and_resumes_exactly(tmp_path):
  from wsae_jax.storage.checkpoint import Checkpointer

  W_p = w.polygon_matrix(3, 3, n_mono=2)
  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=3)
  tc = w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
  schedule = w.objectives.weights.DecoderGamma(alpha=1.0, every=10)
  src = lambda: w.SyntheticSource(W_p, 0.8, 64, seed=1)
  full, _ = w.train(
    cfg,
    tc,
    src(),
    gamma=schedule,
    progress=False,
    checkpointer=Checkpointer(tmp_path / "a", every=20),
  )
  meta = Checkpointer(tmp_path / "a").read_meta(40)
  tsf = np.asarray(full.tokens_since_fired)
  expected = schedule.update(np.asarray(full.params["W_dec"]), tsf, 10 * 64)
  assert_close(meta["gamma_current"], expected, rtol=1e-6)
  assert not np.allclose(meta["gamma_current"], 1.0)  # γ moved away from the plain SAE's
  assert meta["gamma_schedule"] == {"kind": "decoder", "alpha": 1.0, "every": 10}
  # Interrupted after step 20 (the checkpoint of 40 lost), then resumed: the same end.
  ck = Checkpointer(tmp_path / "b", every=20)
  w.train(
    cfg,
    w.TrainConfig(**{**tc.__dict__, "steps": 20}),
    src(),
    gamma=schedule,
    progress=False,
    checkpointer=ck,
  )
  with pytest.raises(w.WSAEInputError, match="train_config.steps"):
    w.train(
      cfg,
      tc,
      src(),
      gamma=schedule,
      progress=False,
      resume=True,
      checkpointer=Checkpointer(tmp_path / "b", every=20),
    )
  import shutil

  shutil.copytree(tmp_path / "a", tmp_path / "c")
  shutil.rmtree(tmp_path / "c" / "40")
  resumed, _ = w.train(
    cfg,
    tc,
    src(),
    gamma=schedule,
    progress=False,
    resume=True,
    checkpointer=Checkpointer(tmp_path / "c", every=20),
  )
  assert_close(jax.device_get(resumed.params), jax.device_get(full.params), rtol=0, atol=0)
  # Another schedule is another run.
  with pytest.raises(w.WSAEInputError, match="gamma_schedule.every"):
    w.train(
      cfg,
      tc,
      src(),
      gamma=w.objectives.weights.DecoderGamma(1.0, every=5),
      progress=False,
      resume=True,
      checkpointer=Checkpointer(tmp_path / "c", every=20),
    )


def test_wsae_train_gamma_decoder(tmp_path, capsys):
  from wsae_jax.app import cli

  args = [
    "train",
    "--out",
    str(tmp_path / "run"),
    "--arch",
    "topk",
    "--k",
    "3",
    "--d-sae",
    "40",
    "--steps",
    "20",
    "--batch-size",
    "64",
    "--gamma",
    "decoder",
    "--alpha",
    "1",
    "--gamma-every",
    "5",
    "--checkpoint-every",
    "10",
    "--no-progress",
  ]
  assert cli.main(args) == 0
  assert "re-estimated every 5 steps" in capsys.readouterr().out
  import json

  run = json.loads((tmp_path / "run" / "run.json").read_text())
  assert run["gamma"] is None and run["gamma_schedule"]["every"] == 5
  assert cli.main(args + ["--resume"]) == 0
  assert (
    cli.main(["train", "--out", str(tmp_path / "r2"), "--gamma", "decoder", "--no-progress"]) == 2
  )
  assert "needs alpha (the exponent of γ)" in capsys.readouterr().err

"""SynthSAEBench: our sampler draws SAELens's law, our metrics equal SAELens's evaluator.

Without SAELens: the law's parts against closed forms (Bernoulli rates, a Gaussian copula's
orthant probability, exclusive groups, gating and scaling by parents) and the metrics on SAEs whose
scores are known exactly. With the `interop` extra: the same construction as SAELens's for a seed,
SAELens's own model (in memory and its saved folder) read exactly, samples within sampling error of
SAELens's sampler, and every metric equal to `eval_sae_on_synthetic_data` on the same SAE and rows.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from scipy.stats import multivariate_normal, norm

import wsae_jax as w
from wsae_jax import models
from wsae_jax.data import synthbench as sb
from wsae_jax.evaluation import synthbench as ev

SMALL = dataclasses.replace(
  sb.SYNTHBENCH_CPU,
  num_features=400,
  hidden_dim=48,
  hierarchy={**sb.SYNTHBENCH_CPU.hierarchy, "total_root_nodes": 4},
  orthogonalization={"num_steps": 20, "lr": 3e-4},
)


def node(i, children=(), exclusive=False, scale=False):
  return {
    "feature_index": i,
    "children": list(children),
    "mutually_exclusive_children": exclusive,
    "scale_children_by_parent": scale,
  }


def hand_law(p, mean, std, roots, factor=None, d=6):
  n = len(p)
  v = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
  return sb.make_law(v, np.zeros(d), p, mean, std, factor, roots)


def draw(law, n=20_000, seed=0):
  return np.asarray(sb.sample(law, jax.random.key(seed), n)[1])


# ---------------------------------------------------------------- the law, against closed forms


def test_independent_rates_and_magnitudes():
  p = np.array([0.05, 0.3, 0.7, 1.0], np.float32)
  f = draw(hand_law(p, [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.5, 0.0], []), n=40_000)
  rate = (f > 0).mean(0)
  assert np.all(np.abs(rate - p) < 5 * np.sqrt(p * (1 - p) / 40_000) + 1e-9)
  assert set(np.unique(f[:, 1])) == {0.0, 2.0}  # std 0: the mean exactly
  on = f[f[:, 2] > 0, 2]
  assert abs(on.mean() - 3.0) < 5 * 0.5 / np.sqrt(on.size)


def test_copula_matches_the_bivariate_normal_orthant():
  rho, p = 0.6, 0.3
  factor = np.array([[np.sqrt(rho)], [np.sqrt(rho)], [0.0]], np.float32)
  f = draw(hand_law([p, p, p], [1, 1, 1], [0, 0, 0], [], factor), n=60_000)
  t = norm.ppf(1 - p)
  both = multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([-t, -t])  # P(g1 > t, g2 > t)
  got = ((f[:, 0] > 0) & (f[:, 1] > 0)).mean()
  assert abs(got - both) < 5 * np.sqrt(both / 60_000)
  indep = ((f[:, 0] > 0) & (f[:, 2] > 0)).mean()  # the third shares no factor
  assert abs(indep - p * p) < 5 * np.sqrt(p * p / 60_000)


def test_hierarchy_gates_scales_and_excludes():
  # 0 -> {1, 2} exclusive and scaled by 0; 1 -> {3, 4} gated, not exclusive; 5 -> {6, 7, 8}
  # exclusive, every one always on.
  roots = [
    node(0, [node(1, [node(3), node(4)]), node(2)], exclusive=True, scale=True),
    node(5, [node(6), node(7), node(8)], exclusive=True),
  ]
  p = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  mean = [2.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  std = [1.0] + [0.0] * 8
  f = draw(hand_law(p, mean, std, roots), n=30_000)
  on0 = f[:, 0] > 0
  assert not (f[~on0, 1:5] > 0).any()  # children of an inactive parent are off
  assert np.all((f[on0, 1] > 0) ^ (f[on0, 2] > 0))  # exactly one of an exclusive pair
  kept = np.where(f[:, 1] > 0, f[:, 1], f[:, 2])[on0]
  assert_close(kept, 3.0 * f[on0, 0] / 2.0, rtol=1e-6)  # scaled by parent / parent's mean
  assert np.all((f[:, 3] > 0) == (f[:, 1] > 0)) and np.all(f[:, 3] == f[:, 4])  # gated only
  winners = (f[:, 6:9] > 0).sum(1)
  assert np.all(winners == 1)
  share = (f[:, 6:9] > 0).mean(0)  # the winner is uniform over the active siblings
  assert np.all(np.abs(share - 1 / 3) < 5 * np.sqrt(2 / 9 / 30_000))


def test_hierarchy_refuses_a_feature_with_two_parents():
  with pytest.raises(w.WSAEInputError, match="appears twice"):
    hand_law([0.5] * 3, [1] * 3, [0] * 3, [node(0, [node(1)]), node(2, [node(1)])])


def test_built_model_has_the_published_shape():
  law = sb.build_law(SMALL)
  assert law.feature_vectors.shape == (400, 48)
  assert_close(jnp.linalg.norm(law.feature_vectors, axis=1), np.ones(400), rtol=1e-5)
  assert_close(jnp.linalg.norm(law.bias), 0.5, rtol=1e-5)
  f = draw(law, n=4000)
  assert 0 < (f > 0).sum(1).mean() < 400
  # 4 roots, branching 4, depth 3: 4 + 16 + 64 + 256 features in trees, every group exclusive
  assert [int(lv[0].shape[0]) for lv in law.levels] == [0, 16, 64, 256]
  assert [int(g[0].shape[0]) for g in law.exclusive] == [4, 16, 64, 0]
  for sib, _ in law.exclusive[:3]:
    for group in np.asarray(sib):
      assert not ((f[:, group] > 0).sum(1) > 1).any()


def test_source_batches_are_the_same_on_four_devices(four_devices):
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  src = sb.SynthBenchSource(sb.build_law(SMALL), 64, seed=3)
  mesh = Mesh(np.asarray(four_devices), ("data",))
  split = src.batch(7, NamedSharding(mesh, P("data")))
  assert len(split.sharding.device_set) == 4
  assert_close(split, src.batch(7), rtol=1e-5, atol=1e-5)  # the same draws (sums may differ)
  assert_close(src.batch(7), src.sample(7)[0], rtol=1e-6, atol=1e-6)  # batch t: sample t
  assert not np.allclose(src.batch(7), src.batch(8))


# ---------------------------------------------------------------- metrics on known answers


def test_metrics_on_a_perfect_sae():
  law = sb.build_law(SMALL)
  x, f = sb.sample(law, jax.random.key(1), 3000)
  e = ev.SynthBenchEvaluator(np.asarray(law.feature_vectors)[::-1] * -2.0, law.feature_vectors)
  e.add(np.asarray(f)[:, ::-1], x, x, f)  # latents reversed, negated and rescaled: still exact
  s = e.result()
  fired = (np.asarray(f) > 0).any(0)
  assert s.mcc == pytest.approx(1.0) and s.uniqueness == 1.0
  assert s.explained_variance == 1.0 and s.shrinkage == pytest.approx(1.0)
  assert s.sae_l0 == s.true_l0 == pytest.approx((np.asarray(f) > 0).sum(1).mean())
  assert s.dead_latents == int((~fired).sum())
  # never-firing latents score precision = recall = F1 = 0, the rest 1
  assert s.f1_score == pytest.approx(fired.mean()) and s.accuracy == 1.0


def test_metrics_on_duplicated_and_shrunk_latents():
  law = sb.build_law(SMALL)
  x, f = sb.sample(law, jax.random.key(2), 3000)
  x, f = np.asarray(x), np.asarray(f)
  V = np.asarray(law.feature_vectors)
  e = ev.SynthBenchEvaluator(np.concatenate([V, V]), V)  # every feature twice
  e.add(np.concatenate([f, np.zeros_like(f)], 1), 0.5 * x, x, f)
  s = e.result()
  fired = (f > 0).any(0)
  assert s.uniqueness == 0.5 and s.mcc == pytest.approx(1.0)
  assert s.f1_score == pytest.approx(fired.sum() / (2 * len(fired)))
  assert s.dead_latents == len(fired) + int((~fired).sum())
  assert s.shrinkage == pytest.approx(0.5)
  var = (x**2).sum(1).mean() - (x.mean(0) ** 2).sum()
  assert s.explained_variance == pytest.approx(1 - (0.25 * x**2).sum(1).mean() / var, rel=1e-6)


def test_ground_truth_readings_see_through_the_bias():
  # An SAE on h = f V + b whose b_dec absorbs b and whose encoder reads h − b reads the same
  # latents as the same SAE on f V: every ground-truth reading must agree, the bias must not leak.
  from wsae_jax.evaluation import metrics

  law = sb.build_law(SMALL)
  src = sb.SynthBenchSource(law, 64, seed=1)
  cfg = w.ReLUSAEConfig(d_in=48, d_sae=80)
  p = models.init(cfg, jax.random.key(4))
  p = {**p, "b_enc": p["b_enc"] + 0.05}
  b = np.asarray(law.bias)
  shifted = {**p, "b_dec": p["b_dec"] + b, "b_enc": p["b_enc"] - b @ np.asarray(p["W_enc"])}
  f = np.asarray(src.sample(5, 2000)[1])
  got = ev.ground_truth_readings(cfg, shifted, law, f)
  want = metrics.evaluate(cfg, p, f, np.asarray(law.feature_vectors).T)
  assert_close(got, want, rtol=2e-4, atol=2e-5)
  with pytest.raises(w.WSAEInputError, match="bias_P"):
    metrics.evaluate(cfg, p, f, np.asarray(law.feature_vectors).T, bias_P=np.ones(3))


def test_evaluator_refuses_mismatched_widths():
  with pytest.raises(w.WSAEInputError, match="width"):
    ev.SynthBenchEvaluator(np.ones((4, 3)), np.ones((5, 6)))


def test_evaluate_synthbench_scores_a_trained_sae():
  law = sb.build_law(SMALL)
  src = sb.SynthBenchSource(law, 256, seed=0)
  cfg = w.TopKSAEConfig(d_in=48, d_sae=64, k=8)
  tc = w.TrainConfig(steps=100, learning_rate=3e-3, batch_size=256, warmup_steps=10)
  state, _ = w.train(cfg, tc, src, progress=False)
  s = ev.evaluate_synthbench(cfg, state.params, src, num_samples=2048, step0=10**6)
  assert s.sae_l0 == pytest.approx(8.0, abs=1e-6)  # Top-k: k per row
  init = models.init(cfg, jax.random.key(0))
  s0 = ev.evaluate_synthbench(cfg, init, src, num_samples=2048, step0=10**6)
  assert s.f1_score > s0.f1_score + 0.15 and s.mcc > s0.mcc
  assert s.explained_variance > s0.explained_variance + 0.3


# ---------------------------------------------------------------- against SAELens (interop)


@pytest.fixture(scope="module")
def saelens_model():
  pytest.importorskip("sae_lens", reason="sae-lens not installed (optional extra)")
  from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig

  return SyntheticModel(SyntheticModelConfig.from_dict(SMALL.to_dict()))


def test_same_construction_as_saelens(saelens_model, tmp_path):
  m = saelens_model
  ours = sb.build_law(SMALL)
  theirs = sb.law_from_saelens(m)
  roots = sb.generate_hierarchy(400, SMALL.hierarchy_fields(), seed=SMALL.seed + 3)
  strip = lambda n: (
    n["feature_index"],
    n["mutually_exclusive_children"],
    n["scale_children_by_parent"],
    [strip(c) for c in n["children"]],
  )
  assert [strip(r) for r in roots] == [strip(r) for r in m.hierarchy.to_dict()["roots"]]
  assert_close(ours.firing_probabilities, theirs.firing_probabilities, rtol=1e-6)
  assert_close(ours.mean_magnitudes, theirs.mean_magnitudes, rtol=1e-6)
  m.save(tmp_path)
  cfg, loaded = sb.load_saelens_model(tmp_path)
  assert cfg.to_dict() == SMALL.to_dict() == m.cfg.to_dict()
  assert_close(loaded, theirs, rtol=0, atol=0)  # the folder reads back exactly


def test_sampler_draws_saelens_law(saelens_model):
  import torch

  law = sb.law_from_saelens(saelens_model)
  n = 40_000
  f = draw(law, n=n)
  torch.manual_seed(0)
  g = saelens_model.activation_generator.sample(n).numpy()
  rate_f, rate_g = (f > 0).mean(0), (g > 0).mean(0)
  pooled = (rate_f + rate_g) / 2
  se = np.sqrt(2 * pooled * (1 - pooled) / n) + 1e-9
  assert np.abs(rate_f - rate_g).max() < 5.5 * se.max()
  assert np.mean(((rate_f - rate_g) / np.maximum(se, 1e-4)) ** 2) < 1.5  # chi² per feature ≈ 1
  l0_f, l0_g = (f > 0).sum(1), (g > 0).sum(1)
  assert abs(l0_f.mean() - l0_g.mean()) < 5 * np.sqrt((l0_f.var() + l0_g.var()) / n)
  for sib, _ in law.exclusive:  # mutually exclusive children never fire together, in either
    for group in np.asarray(sib):
      group = group[group < 400]
      assert not ((f[:, group] > 0).sum(1) > 1).any() and not ((g[:, group] > 0).sum(1) > 1).any()
  top = np.argsort(-rate_f)[:12]  # co-firing of the most frequent features (copula + hierarchy)
  cf, cg = np.corrcoef((f[:, top] > 0).T), np.corrcoef((g[:, top] > 0).T)
  assert np.abs(cf - cg).max() < 5 * np.sqrt(2 / n) * 1.5


def _saelens_eval(sae, law, x_t, f_t, batch_size):
  from sae_lens.synthetic import FeatureDictionary, eval_sae_on_synthetic_data

  class Fixed:  # hands SAELens's evaluator our rows, batch by batch
    def __init__(self):
      self.i = 0

    def sample(self, b):
      out = f_t[self.i : self.i + b]
      self.i += b
      return out

  import torch

  fd = FeatureDictionary(law.num_features, law.hidden_dim, bias=False, initializer=None)
  with torch.no_grad():
    fd.feature_vectors.copy_(torch.tensor(np.asarray(law.feature_vectors)))
    fd.bias.copy_(torch.tensor(np.asarray(law.bias)))
  return eval_sae_on_synthetic_data(sae, fd, Fixed(), num_samples=len(f_t), batch_size=batch_size)


@pytest.mark.parametrize("made_by", ["ours", "saelens"])
def test_metrics_equal_saelens_evaluator(made_by, saelens_model, tmp_path):
  import torch
  from sae_lens import SAE, saes

  from wsae_jax.storage import saelens as io

  law = sb.law_from_saelens(saelens_model)
  if made_by == "ours":
    cfg = w.TopKSAEConfig(d_in=48, d_sae=64, k=6)
    params = models.init(cfg, jax.random.key(3))
    io.save_saelens(tmp_path, cfg, params)
    sae = SAE.load_from_disk(str(tmp_path))
  else:
    torch.manual_seed(0)
    sae = saes.StandardSAE(saes.StandardSAEConfig(d_in=48, d_sae=64))
    with torch.no_grad():
      for t in sae.parameters():
        t.copy_(torch.randn_like(t) * 0.3)
    sae.save_model(str(tmp_path))
    cfg, params = io.load_saelens(tmp_path)
  f = np.asarray(sb.sample(law, jax.random.key(5), 3000)[1])
  f_t = torch.tensor(f)
  x = f_t @ torch.tensor(np.asarray(law.feature_vectors)) + torch.tensor(np.asarray(law.bias))
  theirs = _saelens_eval(sae, law, x, f_t, batch_size=1000).to_dict()
  e = ev.SynthBenchEvaluator(models.decoder_matrix(cfg, params), law.feature_vectors)
  for i in range(0, 3000, 1000):
    xb = x[i : i + 1000].numpy()
    z, x_hat = models.forward(cfg, params, xb)
    e.add(z, x_hat, xb, f[i : i + 1000])
  ours = e.result().to_dict()
  assert 0 < ours["sae_l0"] < 64 and 0 < ours["classification"]["f1_score"] < 1
  assert_close(ours, theirs, rtol=1e-6, atol=1e-6)

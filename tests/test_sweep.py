import dataclasses
import json

import jax
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import parallel
from wsae_jax.app import sweep_file
from wsae_jax.data import problems
from wsae_jax.evaluation import scoring
from wsae_jax.training import sweep
from wsae_jax.training import trainer as train_lib

W_P = w.polygon_matrix(3, 3, n_mono=2)  # n_p = 8, n = 11
TC = w.TrainConfig(steps=50, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=20)
PROBLEM = problems.SyntheticProblem(W_P)


def _separate(cfg, tc, m, mesh):
  """One member trained on its own with `train`, from the same seeds."""
  src = w.SyntheticSource(W_P, m["sparsity"], tc.batch_size, seed=m.get("data_seed", 0))
  gamma = None
  if m.get("alpha") is not None:
    gamma = sweep.member_gammas(
      [
        {
          "gamma": None,
          "alpha": m["alpha"],
          "sparsity": m["sparsity"],
          "data_seed": m.get("data_seed", 0),
        }
      ],
      cfg,
      PROBLEM,
      None,
    )[0]
  tc = dataclasses.replace(
    tc, seed=m.get("seed", 0), learning_rate=m.get("learning_rate", tc.learning_rate)
  )
  return train_lib.train(cfg, tc, src, gamma=gamma, mesh=mesh, progress=False)


@pytest.mark.parametrize(
  "arch",
  [
    "tied",
    "relu",
    "topk",
    "topk-radix-shared",
    "jumprelu",
    "batchtopk",
    "matryoshka_batchtopk",
    "gated",
  ],
)
def test_sweep_equals_separate_runs(arch, four_devices):
  """Each member of a sweep ends where `train` alone takes it. "topk-radix-shared": a k >= 16
  sweep selects by the radix search (its members' own runs by lax.top_k at k < 16), and every
  member reads one stream, so each chunk's batch goes to its members unbatched."""
  base = {
    "tied": w.TiedSAEConfig(d_in=8, d_sae=16),
    "relu": w.ReLUSAEConfig(d_in=8, d_sae=16),
    "topk": w.TopKSAEConfig(d_in=8, d_sae=16, k=4, dead_after_tokens=256),
    "topk-radix-shared": w.TopKSAEConfig(d_in=8, d_sae=40, k=20, dead_after_tokens=256),
    "jumprelu": w.JumpReLUSAEConfig(d_in=8, d_sae=16, l0_coefficient=1e-3),
    "batchtopk": w.BatchTopKSAEConfig(d_in=8, d_sae=16, k=4.0, dead_after_tokens=256),
    "matryoshka_batchtopk": w.MatryoshkaBatchTopKSAEConfig(
      d_in=8, d_sae=16, k=4.0, dead_after_tokens=256, matryoshka_widths=(4, 16)
    ),
    "gated": w.GatedSAEConfig(d_in=8, d_sae=16, l1_coefficient=1e-2),
  }[arch]
  members = [
    {"seed": 0, "sparsity": 0.8},
    {"seed": 1, "sparsity": 0.9, "alpha": 1.0, "data_seed": 3},
    {"seed": 2, "sparsity": 0.8, "learning_rate": 1e-2},
    {"seed": 0, "sparsity": 0.6, "alpha": 0.5},
  ]
  if arch in ("relu", "gated"):
    members[2]["l1_coefficient"] = 0.05
  if arch == "topk":
    members[2]["k"] = 2
  if arch == "jumprelu":
    members[2]["l0_coefficient"] = 0.05
  if arch in ("batchtopk", "matryoshka_batchtopk"):
    members[2]["k"] = 2.5
  if arch == "topk-radix-shared":
    members = [dict(m, sparsity=0.8, data_seed=0) for m in members]
    members[2]["k"], members[3]["k"] = 6, 17
  res = sweep.train_sweep(
    base, TC, members, PROBLEM, progress=False, mesh=sweep.sweep_mesh(4, four_devices)
  )
  assert res.compiles == 1  # 50 steps in calls of 20: the ragged last call reuses the program
  one = parallel.data_mesh(four_devices[:1])
  for i, m in enumerate(members):
    cfg = w.models.with_hyperparameters(base, m)
    assert cfg == res.member_config(i)
    state, hist = _separate(cfg, TC, m, one)
    # Batched and single matmuls round differently: float32 agreement after 50 Adam steps.
    assert_close(
      res.params(i), jax.device_get(state.params), rtol=1e-4, atol=2e-5, err_msg=f"member {i}: {m}"
    )
    assert int(res.states.step[i]) == TC.steps
  rows = scoring.score_sweep(res, PROBLEM)
  assert len(rows) == 4 and all(np.isfinite(r["l_gt"]) for r in rows)


def test_member_axis_over_4_devices_equals_1_device(four_devices):
  cfg = w.TiedSAEConfig(d_in=8, d_sae=16)
  members = sweep.grid(seed=[0, 1], sparsity=[0.7, 0.95], alpha=[0.0, 1.0])
  runs = {}
  for name, mesh in [
    ("1", sweep.sweep_mesh(8, four_devices[:1])),
    ("4 members", sweep.sweep_mesh(8, four_devices)),
    ("2x2 member/data", sweep.sweep_mesh(8, four_devices, data_parallel=2)),
  ]:
    res = sweep.train_sweep(cfg, TC, members, PROBLEM, progress=False, mesh=mesh)
    runs[name] = jax.device_get(res.states.params)
  assert sweep.sweep_mesh(8, four_devices).shape == {"member": 4, "data": 1}
  assert_close(runs["4 members"], runs["1"], rtol=1e-5, atol=1e-6)
  assert_close(runs["2x2 member/data"], runs["1"], rtol=1e-4, atol=1e-5)


def test_a_diverging_member_is_frozen_and_the_others_are_untouched(four_devices):
  cfg = w.TiedSAEConfig(d_in=8, d_sae=16)
  tc = dataclasses.replace(TC, grad_clip=None)
  members = [
    {"seed": 0, "sparsity": 0.8},
    {"seed": 1, "sparsity": 0.8, "learning_rate": 1e30},
    {"seed": 2, "sparsity": 0.8},
    {"seed": 3, "sparsity": 0.8},
  ]
  res = sweep.train_sweep(
    cfg, tc, members, PROBLEM, progress=False, mesh=sweep.sweep_mesh(4, four_devices)
  )
  assert list(res.diverged) == [1]
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(res.params(1)))
  assert scoring.score_sweep(res, PROBLEM)[1]["diverged_at"] == res.diverged[1]
  alone = sweep.train_sweep(
    cfg,
    tc,
    [members[0], members[2]],
    PROBLEM,
    progress=False,
    mesh=sweep.sweep_mesh(2, four_devices[:1]),
  )
  assert_close(res.params(0), alone.params(0), rtol=1e-6, atol=1e-7)
  assert_close(res.params(2), alone.params(1), rtol=1e-6, atol=1e-7)


def test_sweep_on_real_activations_shares_batches():
  x = np.asarray(w.SyntheticSource(W_P, 0.8, 1).sample(0, 2048)[1])
  cfg = w.ReLUSAEConfig(d_in=8, d_sae=16)
  members = sweep.grid(l1_coefficient=[1e-3, 1e-1])
  res = sweep.train_sweep(cfg, TC, members, x, progress=False)
  rows = scoring.score_sweep(res, x)
  assert rows[1]["l0"] < rows[0]["l0"]  # more L1, fewer active latents
  state, _ = train_lib.train(
    dataclasses.replace(cfg, l1_coefficient=1e-3), TC, w.ArraySource(x, 64, seed=0), progress=False
  )
  assert_close(res.params(0), jax.device_get(state.params), rtol=1e-4, atol=2e-5)


def test_results_table_saves_and_pareto_front(tmp_path):
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  res = sweep.train_sweep(
    cfg, dataclasses.replace(TC, steps=10), sweep.grid(sparsity=[0.8, 0.9]), PROBLEM, progress=False
  )
  js, cs = sweep_file.write_results(res, scoring.score_sweep(res, PROBLEM), tmp_path)
  data = json.loads(js.read_text())
  assert len(data["rows"]) == 2 and "l_gt" in data["rows"][0]
  header = cs.read_text().splitlines()[0].split(",")
  for col in (
    "sparsity",
    "l_sae",
    "l_gt",
    "mmcs",
    "l0",
    "dead_frac",
    "features_per_latent",
    "shrinkage",
  ):
    assert col in header
  rng = np.random.default_rng(0)
  rows = [{"l0": float(a), "mse": float(b)} for a, b in rng.random((40, 2))]
  front = scoring.pareto_front(rows)
  brute = [
    i
    for i, r in enumerate(rows)
    if not any((o["l0"] <= r["l0"] and o["mse"] <= r["mse"]) and o != r for o in rows)
  ]
  assert sorted(front) == sorted(brute)


@pytest.mark.parametrize(
  "members, match",
  [
    ([{"seed": 0}], "member 0: sparsity is required"),
    ([{"sparsity": 0.5, "lr": 1.0}], "unknown keys"),
    ([{"sparsity": 1.2}], "member 0: sparsity must lie in"),
    ([{"sparsity": 0.5, "alpha": -1.0, "gamma_kind": "kurtosis"}], "alpha must lie in"),
    ([{"sparsity": 0.5, "k": 3}], r"k only applies to other architectures; tied SAEs sweep none"),
    ([{"sparsity": 0.5, "gamma": np.ones(3)}], r"gamma must have shape \(8,\)"),
    ([], "at least one member"),
  ],
)
def test_bad_sweeps_raise_before_training(members, match):
  with pytest.raises(w.WSAEInputError, match=match):
    sweep.train_sweep(w.TiedSAEConfig(d_in=8, d_sae=11), TC, members, PROBLEM, progress=False)


def test_topk_k_above_config_raises():
  with pytest.raises(w.WSAEInputError, match="k must be <= 4"):
    sweep.train_sweep(
      w.TopKSAEConfig(d_in=8, d_sae=11, k=4),
      TC,
      [{"sparsity": 0.5, "k": 5}],
      PROBLEM,
      progress=False,
    )


def test_grid_rejects_unknown_axes():
  with pytest.raises(w.WSAEInputError, match="unknown sweep axis 'lr'"):
    sweep.grid(lr=[1.0])


def test_the_rbg_generators_are_an_option_with_the_same_law(four_devices):
  """`prng_impl` switches the data streams' generator. JAX's rbg generators depend on how a draw
  is batched, so a sweep's rbg batches are not bit-identical to `train`'s (threefry's are): the
  test checks the law and the sweep's own determinism instead."""
  src = w.SyntheticSource(W_P, 0.8, 4096, seed=0, prng_impl="unsafe_rbg")
  x = np.asarray(src.features(0))
  assert abs(np.mean(x == 0) - 0.8) < 0.01 and 0.45 < x[x > 0].mean() < 0.55  # S, Uniform[0,1]
  threefry = w.SyntheticSource(W_P, 0.8, 4096, seed=0)
  assert not np.allclose(np.asarray(src.batch(0)), np.asarray(threefry.batch(0)))
  cfg = w.TiedSAEConfig(d_in=8, d_sae=16)
  problem = problems.SyntheticProblem(W_P, prng_impl="unsafe_rbg")
  members = [{"seed": 0, "sparsity": 0.8}, {"seed": 0, "sparsity": 0.8}]
  res = sweep.train_sweep(
    cfg, TC, members, problem, progress=False, mesh=sweep.sweep_mesh(2, four_devices[:1])
  )
  assert_close(res.params(0), res.params(1), rtol=0, atol=0)  # same seed, same stream
  assert all(np.isfinite(r["l_gt"]) for r in scoring.score_sweep(res, problem))
  with pytest.raises(w.WSAEInputError, match="prng_impl must be one of"):
    w.SyntheticSource(W_P, 0.8, 8, prng_impl="philox")


def test_batch_coupled_architectures_refuse_a_split_batch(four_devices):
  with pytest.raises(w.WSAEInputError, match="select over the whole batch"):
    sweep.train_sweep(
      w.BatchTopKSAEConfig(d_in=8, d_sae=16, k=4.0),
      TC,
      [{"sparsity": 0.8}] * 2,
      PROBLEM,
      progress=False,
      mesh=sweep.sweep_mesh(2, four_devices, data_parallel=2),
    )


def test_gamma_kind_is_a_sweep_axis():
  """Each member's γ is of its kind, from a held-out sample of its own stream (or W_p)."""
  from wsae_jax.objectives import weights
  from wsae_jax.training import gamma as gamma_lib

  members = sweep.grid(
    sparsity=[0.8], alpha=[1.0], gamma_kind=["variance", "kurtosis", "zero-fraction", "oracle"]
  )
  res = sweep.train_sweep(
    w.TiedSAEConfig(d_in=8, d_sae=11),
    dataclasses.replace(TC, steps=5),
    members,
    PROBLEM,
    progress=False,
  )
  x = np.asarray(PROBLEM.source(0.8, 0).sample(problems.HELD_OUT_STEP, 8192)[1])
  for i, kind in enumerate(["variance", "kurtosis", "zero-fraction"]):
    assert_close(res.gammas[i], gamma_lib.gamma_from_sample(kind, x, 1.0), rtol=1e-6)
  assert_close(
    res.gammas[3],
    weights.weights_from_polysemanticity(w.data.superposition.participation_ratio(W_P), 1.0),
    rtol=1e-6,
  )
  assert not np.allclose(res.gammas[1], res.gammas[0])
  assert [r["gamma_kind"] for r in scoring.score_sweep(res, PROBLEM, eval_samples=256)] == [
    "variance",
    "kurtosis",
    "zero-fraction",
    "oracle",
  ]
  with pytest.raises(w.WSAEInputError, match="member 0: gamma_kind: unknown γ kind 'entropy'"):
    sweep.train_sweep(
      w.TiedSAEConfig(d_in=8, d_sae=11),
      TC,
      [{"sparsity": 0.8, "alpha": 1.0, "gamma_kind": "entropy"}],
      PROBLEM,
      progress=False,
    )
  with pytest.raises(w.WSAEInputError, match="gamma_kind: γ kind 'kurtosis' needs alpha"):
    sweep.train_sweep(
      w.TiedSAEConfig(d_in=8, d_sae=11),
      TC,
      [{"sparsity": 0.8, "gamma_kind": "kurtosis"}],
      PROBLEM,
      progress=False,
    )


def test_decoder_gamma_members_equal_train(four_devices):
  """A member with gamma_kind="decoder" re-estimates its γ between compiled calls exactly as
  `train(gamma=DecoderGamma(...))` does between steps."""
  from wsae_jax.objectives import weights

  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=3, dead_after_tokens=256)
  tc = dataclasses.replace(TC, steps=40, log_every=10)
  members = [
    {"seed": 0, "sparsity": 0.8},
    {"seed": 1, "sparsity": 0.8, "alpha": 1.0, "gamma_kind": "decoder"},
  ]
  res = sweep.train_sweep(
    cfg,
    tc,
    members,
    PROBLEM,
    progress=False,
    decoder_gamma_every=20,
    mesh=sweep.sweep_mesh(2, four_devices[:1]),
  )
  src = w.SyntheticSource(W_P, 0.8, tc.batch_size, seed=0)
  state, _ = train_lib.train(
    cfg,
    dataclasses.replace(tc, seed=1),
    src,
    gamma=weights.DecoderGamma(1.0, every=20),
    progress=False,
    mesh=parallel.data_mesh(four_devices[:1]),
  )
  assert_close(res.params(1), jax.device_get(state.params), rtol=1e-4, atol=2e-5)
  assert not np.allclose(res.gammas[1], 1.0) and np.allclose(res.gammas[0], 1.0)
  with pytest.raises(w.WSAEInputError, match="multiple of steps_per_call"):
    sweep.train_sweep(cfg, tc, members, PROBLEM, progress=False, decoder_gamma_every=15)


def test_uneven_feature_rates_have_their_law_and_sweep_equals_train(four_devices):
  """`rates`: feature j is active with probability (1 − S)·rates[j]; a sweep member on a problem
  with rates ends where `train` on the same `SyntheticSource` takes it."""
  rates = np.linspace(0.25, 1.75, W_P.shape[1]).astype(np.float32)
  src = w.SyntheticSource(W_P, 0.6, 20_000, seed=0, rates=rates)
  freq = np.mean(np.asarray(src.features(0)) > 0, axis=0)
  np.testing.assert_allclose(freq, 0.4 * rates, atol=0.012)  # ~3.5 binomial s.d. at 20k rows
  assert w.data.sources.describe(src)["rates"] == rates.tolist()
  problem = problems.SyntheticProblem(W_P, rates=rates)
  cfg = w.TopKSAEConfig(d_in=8, d_sae=16, k=4, dead_after_tokens=256)
  members = [{"seed": 0, "sparsity": 0.6, "data_seed": 2}, {"seed": 1, "sparsity": 0.8}]
  res = sweep.train_sweep(
    cfg, TC, members, problem, progress=False, mesh=sweep.sweep_mesh(2, four_devices[:2])
  )
  one = parallel.data_mesh(four_devices[:1])
  for i, m in enumerate(members):
    s = w.SyntheticSource(
      W_P, m["sparsity"], TC.batch_size, seed=m.get("data_seed", 0), rates=rates
    )
    state, _ = train_lib.train(
      cfg, dataclasses.replace(TC, seed=m["seed"]), s, mesh=one, progress=False
    )
    assert_close(res.params(i), jax.device_get(state.params), rtol=1e-4, atol=2e-5)
  assert "rates" in problem.describe()
  with pytest.raises(w.WSAEInputError, match=r"feature 10 would be active with probability"):
    w.SyntheticSource(W_P, 0.3, 8, rates=rates)  # 0.7 · 1.75 > 1
  with pytest.raises(w.WSAEInputError, match="member 0: feature 10"):
    sweep.train_sweep(cfg, TC, [{"sparsity": 0.3}], problem, progress=False)
  with pytest.raises(w.WSAEInputError, match=r"rates must have shape \(11,\)"):
    problems.SyntheticProblem(W_P, rates=rates[:3])

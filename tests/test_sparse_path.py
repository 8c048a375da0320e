"""The Top-k family's sparse training path (issue 35): `sparse_path.selected_decode` and its VJP
against the dense formula, every Top-k architecture's sparse loss against its dense loss (values,
gradients, metrics; ties, γ, AuxK, sweep hyperparameters, BatchTopK's fallback), training on 1 and
4 devices and in a sweep, and the compiled program's dense products counted."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from jax.test_util import check_grads
from test_sweep import PROBLEM, TC, _separate

import wsae_jax as w
from wsae_jax import models, parallel
from wsae_jax.models import sparse_path
from wsae_jax.training import sweep
from wsae_jax.training import trainer as train_lib

RNG = np.random.default_rng(0)
B, D, M = 24, 6, 20


def _params(cfg, seed=0, tied_pairs=False):
  p = models.init(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  p = {k: np.asarray(v) + 0.1 * rng.standard_normal(np.shape(v)) for k, v in p.items()}
  if tied_pairs:  # latents 2j and 2j+1 have equal pre-activations on every row: ties everywhere
    p["W_enc"][:, 1::2] = p["W_enc"][:, 0::2]
    p["b_enc"][1::2] = p["b_enc"][0::2]
  return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


def _dense_reference(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep):
  """The same outputs through a dense `(B, d_sae)` code: the slow, obvious formula."""
  vals = jnp.take_along_axis(xc @ W_enc + b_enc, idx, axis=1)
  acts = jnp.where(keep, jax.nn.relu(vals), 0.0)
  rows = jnp.arange(xc.shape[0])[:, None]
  z = jnp.zeros((xc.shape[0], W_enc.shape[1])).at[rows, idx].add(acts)
  bounds = (0, *level_bounds)
  return acts, jnp.stack([z[:, a:b] @ W_dec[a:b] for a, b in zip(bounds, bounds[1:])])


@pytest.mark.parametrize("level_bounds", [(M,), (3, 8, M)])
def test_selected_decode_and_its_vjp_equal_the_dense_formula(level_bounds):
  K = 5
  xc = jnp.asarray(RNG.standard_normal((B, D)), jnp.float32)
  W_enc = jnp.asarray(RNG.standard_normal((D, M)), jnp.float32)
  b_enc = jnp.asarray(RNG.standard_normal(M), jnp.float32)
  W_dec = jnp.asarray(RNG.standard_normal((M, D)), jnp.float32)
  idx = jnp.asarray(np.stack([RNG.permutation(M)[:K] for _ in range(B)]), jnp.int32)
  keep = jnp.asarray(RNG.random((B, K)) < 0.8)
  args = (xc, W_enc, b_enc, W_dec)
  ours = lambda *a: sparse_path.selected_decode(level_bounds, *a, idx, keep)
  ref = lambda *a: _dense_reference(level_bounds, *a, idx, keep)
  assert_close(ours(*args), ref(*args), rtol=1e-5, atol=1e-5)
  # A random functional of both outputs, so both cotangents are non-zero.
  c_acts = jnp.asarray(RNG.standard_normal((B, K)), jnp.float32)
  c_parts = jnp.asarray(RNG.standard_normal((len(level_bounds), B, D)), jnp.float32)
  f = lambda g: lambda *a: jnp.sum(g(*a)[0] * c_acts) + jnp.sum(g(*a)[1] * c_parts)
  grads = jax.grad(f(ours), argnums=(0, 1, 2, 3))(*args)
  assert_close(grads, jax.grad(f(ref), argnums=(0, 1, 2, 3))(*args), rtol=1e-5, atol=1e-5)
  # The dense encoder gradient is zero outside the selected columns: ours must be too, exactly.
  unselected = ~np.isin(np.arange(M), np.asarray(idx)[np.asarray(keep)])
  assert np.all(np.asarray(grads[1])[:, unselected] == 0)
  check_grads(ours, args, order=1, modes=("rev",), atol=5e-2, rtol=5e-2)


def _configs():
  common = dict(d_in=D, d_sae=M, aux_k=4)
  return {
    "topk": lambda sp: w.TopKSAEConfig(**common, k=4, sparse_path=sp),
    "batchtopk": lambda sp: w.BatchTopKSAEConfig(**common, k=3.5, sparse_path=sp),
    "batchtopk-fallback": lambda sp: w.BatchTopKSAEConfig(
      **common, k=3.5, sparse_path=sp, candidates=4
    ),
    "matryoshka": lambda sp: w.MatryoshkaBatchTopKSAEConfig(
      **common, k=3.5, sparse_path=sp, matryoshka_widths=(3, 8, M)
    ),
  }


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dead", ["none", "few", "many"])
@pytest.mark.parametrize("name", list(_configs()))
def test_sparse_loss_equals_dense_loss(name, dead, ties):
  """Loss, gradients and metrics of the sparse path equal the dense path's, with γ, with AuxK
  gathered (few dead) and full-width (many dead), and with tied pre-activations (ties broken as
  `lax.top_k` breaks them). "batchtopk-fallback": 4 candidates per row for 3.5 per row on
  average, so some batches need the dense fallback and others not; both must be exact."""
  make = _configs()[name]
  dense_cfg, sparse_cfg = make(False), make(True)
  p = _params(dense_cfg, tied_pairs=ties)
  x = jnp.asarray(RNG.standard_normal((B, D)), jnp.float32)
  gamma = jnp.asarray(RNG.uniform(0.3, 2.0, D), jnp.float32)
  dead_M = {"none": None, "few": jnp.arange(M) % 7 == 1, "many": jnp.arange(M) % 2 == 0}[dead]
  hps = [{}] + ([{"k": 2}] if name == "topk" else [{"k": 5.0}])
  for hp in hps:

    def run(cfg):
      f = lambda q: models.sae_loss(cfg, q, x, gamma=gamma, dead_M=dead_M, hp=hp)
      return jax.value_and_grad(f, has_aux=True)(p)

    (l_d, aux_d), g_d = run(dense_cfg)
    (l_s, aux_s), g_s = run(sparse_cfg)
    assert_close(l_s, l_d, rtol=1e-5, err_msg=str(hp))
    assert_close(g_s, g_d, rtol=1e-5, atol=1e-5, err_msg=str(hp))
    for key in set(aux_d) - {"fired"}:
      assert_close(aux_s[key], aux_d[key], rtol=1e-5, atol=1e-7, err_msg=f"{key} {hp}")
    assert np.array_equal(np.asarray(aux_s["fired"]), np.asarray(aux_d["fired"]))


def test_batchtopk_fallback_is_taken_only_when_a_row_overflows():
  cfg = w.BatchTopKSAEConfig(d_in=D, d_sae=M, k=3.0, candidates=4)
  p = _params(cfg)
  x = jnp.asarray(RNG.standard_normal((B, D)), jnp.float32)
  pre = models.pre_activations(cfg, p, x)
  _, _, exact = models.batchtopk.batch_candidates(pre, 3.0, 4)
  kept = np.asarray(models.batchtopk.batch_topk(pre, 3.0) > 0)
  assert bool(exact) == bool(np.all(kept.sum(axis=1) < 4))
  _, _, exact_wide = models.batchtopk.batch_candidates(pre, 3.0, M)
  assert bool(exact_wide)  # every latent a candidate: never a fallback


def _dense_dots_per_step(fn, *args, d_sae):
  """StableHLO dot_generals of the entry function with a d_sae-wide operand or result that run on
  every step: those at the function's own level, not nested in a `case` region (AuxK's and
  BatchTopK's fallback live there and run only when taken)."""
  text = jax.jit(fn).lower(*args).as_text()
  main = text.split("func.func public @main", 1)[1].split("\n  func.func", 1)[0]
  wide = re.compile(rf"(?<![0-9]){d_sae}x|x{d_sae}(?![0-9])")
  return sum(
    1
    for line in main.splitlines()
    if "stablehlo.dot_general" in line and line.startswith("    %") and wide.search(line)
  )


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_step_has_one_dense_product(arch):
  """The sparse path's loss and gradient hold one `(B, d_in) × (d_in, d_sae)` product (the
  encoder forward for the selection); the dense path's six (the five of the weights and the
  input gradient that reaches b_dec). AuxK's and the fallback's products
  exist only inside their `lax.cond` branches, not on every step."""
  Bh, Dh, Mh = 32, 24, 768
  extra = {"k": 4} if arch == "topk" else {"k": 4.0}
  x = jnp.zeros((Bh, Dh), jnp.float32)
  dead_M = jnp.zeros(Mh, bool)
  for sp, expect in ((True, 1), (False, 6)):
    cfg = w.make_config(arch, d_in=Dh, d_sae=Mh, sparse_path=sp, **extra)
    p = models.init(cfg, jax.random.key(0))
    grad = jax.grad(lambda q, x: models.sae_loss(cfg, q, x, dead_M=dead_M)[0])
    assert _dense_dots_per_step(grad, p, x, d_sae=Mh) == expect, sp


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka_batchtopk"])
def test_training_on_the_sparse_path_equals_the_dense_path_on_1_and_4_devices(arch, four_devices):
  """10 Adam steps with γ and AuxK acting (a one-batch dead window): the sparse path on 1 and 4
  devices ends at the dense path's parameters."""
  extra = {"k": 3} if arch == "topk" else {"k": 3.0}
  if arch == "matryoshka_batchtopk":
    extra["matryoshka_widths"] = (8, 32)
  W_P = w.polygon_matrix(3, 3, n_mono=2)
  tc = w.TrainConfig(steps=10, batch_size=64, learning_rate=3e-3, warmup_steps=2, log_every=5)
  src = lambda: w.SyntheticSource(W_P, 0.8, 64, seed=0)
  gamma = w.variance_weights(np.asarray(src().sample(10**6, 512)[1]), 1.0)
  out = {}
  for sp, devices in ((False, four_devices[:1]), (True, four_devices[:1]), (True, four_devices)):
    cfg = w.make_config(
      arch, d_in=W_P.shape[0], d_sae=32, sparse_path=sp, dead_after_tokens=64, **extra
    )
    state, hist = train_lib.train(
      cfg, tc, src(), gamma=gamma, mesh=parallel.data_mesh(devices), progress=False
    )
    out[(sp, len(devices))] = (jax.device_get(state.params), hist.column("aux_k"))
  ref_params, ref_aux = out[(False, 1)]
  assert np.any(ref_aux > 0)  # AuxK acted
  for key in ((True, 1), (True, 4)):
    assert_close(out[key][0], ref_params, rtol=1e-4, atol=1e-5, err_msg=str(key))
    assert_close(out[key][1], ref_aux, rtol=1e-4, atol=1e-6, err_msg=str(key))


def test_sweep_on_the_sparse_path_equals_separate_dense_runs(four_devices):
  """Sweep members (vmapped, k traced per member, γ for one) on the sparse path end where
  `train` takes each alone on the dense path."""
  base = w.TopKSAEConfig(d_in=8, d_sae=32, k=4, dead_after_tokens=256, sparse_path=True)
  members = [
    {"seed": 0, "sparsity": 0.8, "k": 4},
    {"seed": 1, "sparsity": 0.8, "k": 2, "alpha": 1.0},
  ]
  res = sweep.train_sweep(
    base, TC, members, PROBLEM, progress=False, mesh=sweep.sweep_mesh(2, four_devices[:2])
  )
  one = parallel.data_mesh(four_devices[:1])
  for i, m in enumerate(members):
    cfg = dataclasses.replace(base, k=m["k"], sparse_path=False)
    state, _ = _separate(cfg, TC, m, one)
    assert_close(res.params(i), jax.device_get(state.params), rtol=1e-4, atol=2e-5)

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import assert_close

import wsae_jax as w
from wsae_jax.models import constraints
from wsae_jax.training import optim

RNG = np.random.default_rng(0)
PARAMS = {"W_dec": jnp.asarray(RNG.standard_normal((5, 3)), jnp.float32), "b_dec": jnp.zeros(3)}
GRADS = {"W_dec": jnp.asarray(RNG.standard_normal((5, 3)), jnp.float32), "b_dec": jnp.ones(3)}


def test_remove_parallel_component_is_orthogonal_and_idempotent():
  t = constraints.remove_parallel_decoder_grad()
  u, _ = t.update(GRADS, t.init(PARAMS), PARAMS)
  rows = PARAMS["W_dec"] / jnp.linalg.norm(PARAMS["W_dec"], axis=1, keepdims=True)
  assert_close(jnp.sum(u["W_dec"] * rows, axis=1), np.zeros(5), atol=1e-6)
  u2, _ = t.update(u, t.init(PARAMS), PARAMS)
  assert_close(u2, u, atol=1e-6)
  assert_close(u["b_dec"], GRADS["b_dec"])


def test_renormalize_makes_unit_rows():
  t = constraints.renormalize_decoder_rows()
  u, _ = t.update(GRADS, t.init(PARAMS), PARAMS)
  new = optax.apply_updates(PARAMS, u)
  assert_close(jnp.linalg.norm(new["W_dec"], axis=1), np.ones(5), atol=1e-6)
  expected = PARAMS["W_dec"] + GRADS["W_dec"]
  assert_close(new["W_dec"], expected / jnp.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_schedule_warms_up_then_decays():
  s = optim.learning_rate_schedule(1.0, steps=100, warmup_steps=10, decay_fraction=0.2)
  assert_close(
    [s(0), s(5), s(10), s(50), s(80), s(90), s(100)], [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6
  )


def test_topk_training_keeps_unit_decoder_rows():
  cfg = w.TopKSAEConfig(d_in=3, d_sae=5, k=2)
  opt = optim.make_optimizer(cfg, w.TrainConfig(learning_rate=0.1, steps=10))
  p = w.models.init(cfg, jax.random.key(0))
  s = opt.init(p)
  for _ in range(3):
    g = jax.tree.map(lambda a: jnp.ones_like(a), p)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
  assert_close(jnp.linalg.norm(p["W_dec"], axis=1), np.ones(5), atol=1e-5)


def test_clip_below_projects_only_its_parameter():
  params = {"threshold": jnp.asarray([0.5, 0.1, 2.0]), "b": jnp.zeros(3)}
  updates = {"threshold": jnp.asarray([-1.0, 0.05, -0.5]), "b": -jnp.ones(3)}
  t = constraints.clip_below("threshold", 0.0)
  u, _ = t.update(updates, t.init(params), params)
  assert_close(optax.apply_updates(params, u)["threshold"], [0.0, 0.15, 1.5], atol=1e-7)
  assert_close(u["b"], updates["b"])


def test_jumprelu_training_keeps_thresholds_nonnegative():
  cfg = w.JumpReLUSAEConfig(d_in=3, d_sae=5, init_threshold=0.001)
  opt = optim.make_optimizer(cfg, w.TrainConfig(learning_rate=0.5, steps=10, warmup_steps=0))
  p = w.models.init(cfg, jax.random.key(0))
  s = opt.init(p)
  for _ in range(3):
    g = jax.tree.map(lambda a: jnp.ones_like(a), p)  # pushes every threshold down
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
  assert float(jnp.min(p["threshold"])) == 0.0

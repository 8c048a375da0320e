import jax
import jax.numpy as jnp
import numpy as np
import optax

import wsae_jax as w
from wsae_jax import optim
from helpers import assert_close

RNG = np.random.default_rng(0)
PARAMS = {"W_dec": jnp.asarray(RNG.standard_normal((5, 3)), jnp.float32),
          "b_dec": jnp.zeros(3)}
GRADS = {"W_dec": jnp.asarray(RNG.standard_normal((5, 3)), jnp.float32), "b_dec": jnp.ones(3)}


def test_remove_parallel_component_is_orthogonal_and_idempotent():
  t = optim.remove_parallel_decoder_grad()
  u, _ = t.update(GRADS, t.init(PARAMS), PARAMS)
  rows = PARAMS["W_dec"] / jnp.linalg.norm(PARAMS["W_dec"], axis=1, keepdims=True)
  assert_close(jnp.sum(u["W_dec"] * rows, axis=1), np.zeros(5), atol=1e-6)
  u2, _ = t.update(u, t.init(PARAMS), PARAMS)
  assert_close(u2, u, atol=1e-6)
  assert_close(u["b_dec"], GRADS["b_dec"])


def test_renormalize_makes_unit_rows():
  t = optim.renormalize_decoder_rows()
  u, _ = t.update(GRADS, t.init(PARAMS), PARAMS)
  new = optax.apply_updates(PARAMS, u)
  assert_close(jnp.linalg.norm(new["W_dec"], axis=1), np.ones(5), atol=1e-6)
  expected = (PARAMS["W_dec"] + GRADS["W_dec"])
  assert_close(new["W_dec"], expected / jnp.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_schedule_warms_up_then_decays():
  s = optim.learning_rate_schedule(1.0, steps=100, warmup_steps=10, decay_fraction=0.2)
  assert_close([s(0), s(5), s(10), s(50), s(80), s(90), s(100)],
               [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_topk_training_keeps_unit_decoder_rows():
  cfg = w.TopKSAEConfig(d_in=3, d_sae=5, k=2)
  opt = optim.make_optimizer(cfg, learning_rate=0.1, steps=10)
  p = w.sae.init(cfg, jax.random.key(0))
  s = opt.init(p)
  for _ in range(3):
    g = jax.tree.map(lambda a: jnp.ones_like(a), p)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
  assert_close(jnp.linalg.norm(p["W_dec"], axis=1), np.ones(5), atol=1e-5)

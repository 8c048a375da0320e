"""wsae-jax against the PyTorch baseline (benchmarks/torch_baseline.py): same initial weights, same
batches -> same loss, gradients, and parameters after several Adam steps."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[bench]'")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from helpers import assert_close  # noqa: E402
from torch_baseline import TorchSAE, TorchTrainer  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax import (
  models,  # noqa: E402
  parallel,
)
from wsae_jax.training import trainer as train_lib  # noqa: E402

D_IN, D_SAE, B, STEPS = 12, 48, 64, 6
RNG = np.random.default_rng(0)
BATCHES = RNG.standard_normal((STEPS, B, D_IN)).astype(np.float32)
GAMMA = RNG.uniform(0.3, 2.0, D_IN).astype(np.float32)

CONFIGS = {
  "tied": w.TiedSAEConfig(d_in=D_IN, d_sae=D_SAE),
  "relu": w.ReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.01),
  # dead_after_tokens=B: latents silent for one batch are dead, so AuxK is exercised.
  "topk": w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4, dead_after_tokens=B, sparse_path=False),
  "topk-sparse": w.TopKSAEConfig(
    d_in=D_IN, d_sae=D_SAE, k=4, dead_after_tokens=B, sparse_path=True
  ),
  # A wide kernel and thresholds near the pre-activations, so the estimators see many rows.
  "jumprelu": w.JumpReLUSAEConfig(
    d_in=D_IN, d_sae=D_SAE, l0_coefficient=0.05, bandwidth=0.5, init_threshold=0.1
  ),
  "batchtopk": w.BatchTopKSAEConfig(
    d_in=D_IN, d_sae=D_SAE, k=4.5, dead_after_tokens=B, threshold_lr=0.2
  ),
  "matryoshka_batchtopk": w.MatryoshkaBatchTopKSAEConfig(
    d_in=D_IN,
    d_sae=D_SAE,
    k=4.5,
    dead_after_tokens=B,
    threshold_lr=0.2,
    matryoshka_widths=(6, 20, D_SAE),
  ),
  "gated": w.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.01),
}
BATCH_THRESHOLD = ("batchtopk", "matryoshka_batchtopk")  # θ set by a moving average


def _torch_sae(name, cfg, params):
  fields = (
    "l1_coefficient",
    "k",
    "dead_after_tokens",
    "l0_coefficient",
    "bandwidth",
    "threshold_lr",
  )
  kw = {f: getattr(cfg, f) for f in fields if hasattr(cfg, f)}
  if hasattr(cfg, "levels"):
    kw["matryoshka_widths"] = cfg.levels
  return TorchSAE.from_params(cfg.architecture, {k: np.asarray(v) for k, v in params.items()}, **kw)


@pytest.mark.parametrize("use_gamma", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_gradients_and_adam_steps_match(name, use_gamma, four_devices):
  cfg = CONFIGS[name]
  gamma = GAMMA if use_gamma else None
  params = w.models.init(cfg, jax.random.key(1))
  # The biases' draws depend on this case alone, not on which tests ran before in the process
  # (pytest -n 2 spreads tests over workers in no fixed order).
  rng = np.random.default_rng(list(CONFIGS).index(name))
  if cfg.architecture != "tied":  # non-zero biases so that they are checked too
    params = {**params, "b_dec": jnp.asarray(rng.normal(0, 0.1, D_IN), jnp.float32)}
    for bias in ("b_enc", "b_gate", "b_mag", "r_mag"):
      if bias in params:
        params[bias] = jnp.asarray(rng.normal(0, 0.1, D_SAE), jnp.float32)
  if cfg.architecture == "jumprelu":  # thresholds of their own, some near the pre-activations
    params["threshold"] = jnp.asarray(rng.uniform(0.0, 0.6, D_SAE), jnp.float32)
  tsae = _torch_sae(name, cfg, params)
  g_t = None if gamma is None else torch.tensor(gamma)

  # Loss and gradient at the start.
  loss_j, grads_j = jax.value_and_grad(
    lambda p: models.sae_loss(cfg, p, BATCHES[0], gamma=gamma)[0]
  )(params)
  tsae.zero_grad()
  loss_t, _ = tsae.loss(torch.tensor(BATCHES[0]), g_t)
  loss_t.backward()
  assert_close(loss_j, float(loss_t.detach()), rtol=1e-5, atol=1e-6)
  grads_j = jax.device_get(grads_j)
  if cfg.architecture in BATCH_THRESHOLD:  # θ is set by its moving average, not the gradient
    assert float(grads_j.pop("threshold")) == 0.0
  assert_close(
    grads_j, {n: p.grad.numpy() for n, p in tsae.named_parameters()}, rtol=1e-4, atol=1e-6
  )
  if cfg.architecture == "jumprelu":  # the estimators reached θ (else the check is vacuous)
    assert np.count_nonzero(grads_j["threshold"]) >= D_SAE // 4

  # Several Adam steps with warm-up, clipping and the decoder handling of each architecture.
  tc = w.TrainConfig(
    steps=STEPS, batch_size=B, learning_rate=1e-2, warmup_steps=2, log_every=1, grad_clip=1.0
  )
  tsae = _torch_sae(name, cfg, params)
  trainer = TorchTrainer(
    tsae, lr=tc.learning_rate, steps=STEPS, warmup_steps=tc.warmup_steps, grad_clip=tc.grad_clip
  )
  torch_losses = [trainer.step(torch.tensor(x), g_t) for x in BATCHES]
  state, hist = train_lib.train(
    cfg,
    tc,
    iter(list(BATCHES)),
    gamma=gamma,
    params=params,
    progress=False,
    mesh=parallel.data_mesh(four_devices[:1]),
  )
  assert_close(hist.column("loss"), torch_losses, rtol=1e-4, atol=1e-6)
  assert_close(jax.device_get(state.params), tsae.params_numpy(), rtol=1e-4, atol=2e-6)
  if cfg.architecture in BATCH_THRESHOLD:  # the moving average moved θ (else it is vacuous)
    assert float(state.params["threshold"]) > 0.05
  if models.get(cfg).uses_dead_latents:
    assert np.array_equal(np.asarray(state.tokens_since_fired), tsae.tokens_since_fired.numpy())

import json

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from test_sae import _random_params

import wsae_jax as w
from wsae_jax import models
from wsae_jax.storage import saelens as io

RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, 6)).astype(np.float32)
CONFIGS = [
  w.TiedSAEConfig(d_in=6, d_sae=10),
  w.ReLUSAEConfig(d_in=6, d_sae=10, l1_coefficient=0.02),
  w.TopKSAEConfig(d_in=6, d_sae=10, k=3),
  w.JumpReLUSAEConfig(d_in=6, d_sae=10, l0_coefficient=0.2, bandwidth=0.1),
  w.BatchTopKSAEConfig(d_in=6, d_sae=10, k=2.5, threshold_lr=0.05),
  w.MatryoshkaBatchTopKSAEConfig(d_in=6, d_sae=10, k=2.5, matryoshka_widths=(3, 6, 10)),
  w.GatedSAEConfig(d_in=6, d_sae=10, l1_coefficient=0.3),
]
# SAELens saves (Matryoshka) BatchTopK SAEs as JumpReLU ones
SAELENS_NAMES = {
  "tied": "standard",
  "relu": "standard",
  "topk": "topk",
  "jumprelu": "jumprelu",
  "batchtopk": "jumprelu",
  "matryoshka_batchtopk": "jumprelu",
  "gated": "gated",
}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.architecture)
def test_round_trip_is_exact_and_computes_the_same(cfg, tmp_path):
  p = _random_params(cfg)
  io.save_saelens(tmp_path, cfg, p, metadata={"model_name": "toy", "hook_layer": 3})
  c = json.loads((tmp_path / "cfg.json").read_text())
  assert c["d_in"] == 6 and c["d_sae"] == 10 and c["metadata"]["hook_layer"] == 3
  assert c["architecture"] == SAELENS_NAMES[cfg.architecture]
  cfg2, p2 = io.load_saelens(tmp_path)
  assert cfg2 == cfg  # the tied SAE too: our own tied export loads back as tied
  for k in p:
    assert np.array_equal(p2[k], np.asarray(p[k])), k
  z, x_hat = models.forward(cfg, p, X)
  z2, x_hat2 = models.forward(cfg2, {k: jnp.asarray(v) for k, v in p2.items()}, X)
  assert_close(z2, z, rtol=1e-6, atol=1e-6)
  assert_close(x_hat2, x_hat, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS[1:], ids=lambda c: c.architecture)
def test_normalization_scale_is_folded(cfg, tmp_path):
  p = _random_params(cfg)
  c = 2.5
  io.save_saelens(tmp_path, cfg, p, normalization_scale=c)
  cfg2, p2 = io.load_saelens(tmp_path)
  # The exported SAE on raw x equals the trained SAE on c·x, with the output scaled back.
  z, x_hat = models.forward(cfg, p, c * X)
  z2, x_hat2 = models.forward(cfg2, {k: jnp.asarray(v) for k, v in p2.items()}, X)
  assert_close(z2, z, rtol=1e-5, atol=1e-5)
  assert_close(x_hat2, np.asarray(x_hat) / c, rtol=1e-5, atol=1e-5)


def test_standard_sae_with_b_dec_at_input_is_folded_exactly(tmp_path):
  cfg = w.ReLUSAEConfig(d_in=6, d_sae=10)
  p = _random_params(cfg)
  io.save_saelens(tmp_path, cfg, p)
  c = json.loads((tmp_path / "cfg.json").read_text())
  c["apply_b_dec_to_input"] = True
  (tmp_path / "cfg.json").write_text(json.dumps(c))
  cfg2, p2 = io.load_saelens(tmp_path)
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  ref = np.maximum((X - pp["b_dec"]) @ pp["W_enc"] + pp["b_enc"], 0)  # SAELens semantics
  assert_close(models.encode(cfg2, p2, X), ref, rtol=1e-5, atol=1e-5)


def test_saelens_itself_reads_our_export(tmp_path):
  sae_lens = pytest.importorskip("sae_lens", reason="sae-lens not installed (optional extra)")
  import torch

  for cfg in CONFIGS[1:]:
    p = _random_params(cfg)
    if "threshold" in p:  # thresholds below some pre-activations and above others
      p["threshold"] = jnp.abs(p["threshold"]) + 0.2
    folder = tmp_path / cfg.architecture
    io.save_saelens(folder, cfg, p)
    theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
    assert theirs.cfg.architecture() == SAELENS_NAMES[cfg.architecture]
    with torch.no_grad():
      z_t = theirs.encode(torch.tensor(X)).numpy()
      x_t = theirs.decode(torch.tensor(z_t)).numpy()
    z, x_hat = models.forward(cfg, p, X)
    assert_close(z_t, z, rtol=1e-5, atol=1e-5)
    assert_close(x_t, x_hat, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "mutate, match",
  [
    (lambda d: (d / "cfg.json").unlink(), "cfg.json is missing"),
    (lambda d: (d / "cfg.json").write_text("{"), "not valid JSON"),
    (
      lambda d: (d / "cfg.json").write_text(
        json.dumps({"architecture": "abstopk", "d_in": 6, "d_sae": 10})
      ),
      "architecture 'abstopk' is not supported",
    ),
    (
      lambda d: (d / "cfg.json").write_text(
        json.dumps({"architecture": "standard", "d_in": 7, "d_sae": 10})
      ),
      r"\(d_in=7, d_sae=10\) requires \(7, 10\)",
    ),
  ],
)
def test_bad_saelens_folders_raise(mutate, match, tmp_path):
  io.save_saelens(tmp_path, CONFIGS[1], _random_params(CONFIGS[1]))
  mutate(tmp_path)
  with pytest.raises(w.WSAEInputError, match=match):
    io.load_saelens(tmp_path)


def test_a_tied_export_with_a_folded_scale_loads_as_its_relu_equivalent(tmp_path):
  cfg = w.TiedSAEConfig(d_in=6, d_sae=10)
  p = _random_params(cfg)
  io.save_saelens(tmp_path, cfg, p, normalization_scale=2.0)  # W_enc·2, W_dec/2: no longer tied
  cfg2, p2 = io.load_saelens(tmp_path)
  assert cfg2.architecture == "relu"
  x = np.asarray(X) / 2.0  # raw activations: the SAE was trained on 2·x
  assert_close(
    models.forward(cfg2, p2, x)[1],
    np.asarray(models.forward(cfg, p, np.asarray(X))[1]) / 2.0,
    rtol=1e-5,
    atol=1e-6,
  )


def test_saelens_topk_with_decoder_norm_rescaling_gives_saelens_codes(tmp_path):
  """SAELens's `rescale_acts_by_decoder_norm = True` (its TopK default for training) loads with
  the decoder norms folded: codes and reconstructions equal SAELens's own, built by SAELens."""
  sae_lens = pytest.importorskip("sae_lens", reason="sae-lens not installed (optional extra)")
  import torch
  from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

  torch.manual_seed(0)
  sae = TopKSAE(
    TopKSAEConfig(
      d_in=6, d_sae=10, k=3, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=True
    )
  )
  with torch.no_grad():
    for t in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
      t.copy_(torch.randn_like(t) * (0.3 + torch.rand_like(t)))
  sae.save_model(str(tmp_path))
  assert json.loads((tmp_path / "cfg.json").read_text())["rescale_acts_by_decoder_norm"] is True
  cfg, p = io.load_saelens(tmp_path)
  with torch.no_grad():
    z_t = sae.encode(torch.tensor(X)).numpy()
    x_t = sae.decode(torch.tensor(z_t)).numpy()
  z, x_hat = models.forward(cfg, {k: jnp.asarray(v) for k, v in p.items()}, X)
  assert np.abs(z_t).max() > 0.1 and (np.count_nonzero(z_t, axis=1) <= 3).all()
  assert_close(z, z_t, rtol=1e-5, atol=1e-5)
  assert_close(x_hat, x_t, rtol=1e-5, atol=1e-5)
  del sae_lens


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_saelens_weights_load_upcast_with_one_warning(dtype, tmp_path):
  torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
  from safetensors.torch import save_file

  cfg = CONFIGS[2]  # topk
  p = _random_params(cfg)
  io.save_saelens(tmp_path, cfg, p)
  half = {k: torch.tensor(np.asarray(v)).to(getattr(torch, dtype)) for k, v in p.items()}
  save_file(half, str(tmp_path / "sae_weights.safetensors"))
  with pytest.warns(UserWarning, match=f"stored as {dtype}; upcast to float32") as rec:
    cfg2, p2 = io.load_saelens(tmp_path)
  assert len([r for r in rec if "upcast" in str(r.message)]) == 1
  for k, v in half.items():
    assert p2[k].dtype == np.float32
    np.testing.assert_array_equal(p2[k], v.float().numpy())


def test_export_writes_saelens6_metadata_that_saelens_reads(tmp_path):
  sae_lens = pytest.importorskip("sae_lens", reason="sae-lens not installed (optional extra)")
  meta = io.metadata_from_data({"kind": "activations", "model": "SmolLM2", "layer": 15})
  assert meta == {
    "model_name": "SmolLM2",
    "hook_layer": 15,
    "hook_name": "blocks.15.hook_resid_post",
  }
  assert io.metadata_from_data({"kind": "synthetic"}) == {}
  io.save_saelens(tmp_path, CONFIGS[2], _random_params(CONFIGS[2]), metadata=meta)
  theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
  assert theirs.cfg.metadata.model_name == "SmolLM2"
  assert theirs.cfg.metadata.hook_name == "blocks.15.hook_resid_post"
  assert theirs.cfg.metadata.hook_layer == 15

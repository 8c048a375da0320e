"""Every SAELens 6.54 inference SAE option, built and saved by SAELens itself: it either loads
with codes and reconstructions equal to SAELens's own, or is refused with a message naming the
option (never a silently different SAE)."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import models
from wsae_jax.storage import saelens as io

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens not installed (optional extra)")
torch = pytest.importorskip("torch")
from sae_lens import saes  # noqa: E402

D_IN, D_SAE = 6, 12
X = np.random.default_rng(0).standard_normal((64, D_IN)).astype(np.float32)

# (SAELens class, its config's extra fields, whether this library reads it)
ARCHS = {
  "standard": (saes.StandardSAE, saes.StandardSAEConfig, {}, True),
  "topk": (saes.TopKSAE, saes.TopKSAEConfig, {"k": 3}, True),
  "topk-rescaled": (
    saes.TopKSAE,
    saes.TopKSAEConfig,
    {"k": 3, "rescale_acts_by_decoder_norm": True},
    True,
  ),
  "jumprelu": (saes.JumpReLUSAE, saes.JumpReLUSAEConfig, {}, True),
  "gated": (saes.GatedSAE, saes.GatedSAEConfig, {}, True),
  "abstopk": (saes.AbsTopKSAE, saes.AbsTopKSAEConfig, {"k": 3}, False),
}
NORMALIZE = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


@pytest.mark.parametrize(
  "arch, b_dec_in, normalize", list(itertools.product(ARCHS, (False, True), NORMALIZE))
)
def test_saelens_option(arch, b_dec_in, normalize, tmp_path):
  cls, cfg_cls, extra, supported = ARCHS[arch]
  torch.manual_seed(0)
  sae = cls(
    cfg_cls(
      d_in=D_IN,
      d_sae=D_SAE,
      apply_b_dec_to_input=b_dec_in,
      normalize_activations=normalize,
      **extra,
    )
  )
  with torch.no_grad():
    for name, t in sae.named_parameters():
      t.copy_(torch.randn_like(t) * 0.5 + (0.3 if "threshold" in name else 0.0))
  sae.save_model(str(tmp_path))
  if not supported or normalize != "none":
    option = "normalize_activations" if normalize != "none" else f"architecture '{arch}'"
    with pytest.raises(w.WSAEInputError, match=option):
      io.load_saelens(tmp_path)
    return
  cfg, p = io.load_saelens(tmp_path)
  with torch.no_grad():
    z_t = sae.encode(torch.tensor(X)).numpy()
    x_t = sae.decode(torch.tensor(z_t)).numpy()
  z, x_hat = models.forward(cfg, {k: jnp.asarray(v) for k, v in p.items()}, X)
  assert (z_t > 0).any() and (z_t == 0).any()  # the activation function is exercised
  assert_close(z, z_t, rtol=1e-5, atol=1e-5)
  assert_close(x_hat, x_t, rtol=1e-5, atol=1e-5)

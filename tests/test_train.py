import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import parallel
from wsae_jax.training import optim
from wsae_jax.training import state as state_lib
from wsae_jax.training import trainer as train_lib

W_P = w.polygon_matrix(3, 3, n_mono=2)  # n_p = 8, n = 11
TC = w.TrainConfig(steps=60, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=20)


def _source(seed=0, sparsity=0.8, batch_size=TC.batch_size):
  return w.SyntheticSource(W_P, sparsity, batch_size, seed=seed)


@pytest.mark.parametrize("arch", ["tied", "relu", "topk"])
def test_one_and_four_devices_agree(arch, four_devices):
  extra = {"k": 3, "dead_after_tokens": 256} if arch == "topk" else {}
  cfg = w.make_config(arch, d_in=8, d_sae=16, **extra)
  gamma = w.variance_weights(np.asarray(_source().sample(10**6, 512)[1]), 1.0)
  out = []
  for devices in (four_devices[:1], four_devices):
    state, hist = train_lib.train(
      cfg, TC, _source(), gamma=gamma, mesh=parallel.data_mesh(devices), progress=False
    )
    assert state.params["W_enc"].sharding.mesh.size == len(devices)
    out.append((jax.device_get(state.params), hist.column("loss")))
  # Same data, same init; only the order of the batch reduction differs (float32).
  assert_close(out[0][0], out[1][0], rtol=1e-4, atol=1e-5)
  assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-6)


def test_train_step_compiles_once(four_devices):
  cfg = w.ReLUSAEConfig(d_in=8, d_sae=16)
  mesh = parallel.data_mesh(four_devices)
  state = state_lib.init_state(cfg, TC, mesh=mesh)
  step = train_lib.make_train_step(cfg, TC, mesh=mesh)
  src = _source()
  gamma = jnp.ones(8)
  for i in range(3):
    state, _ = step(state, src.batch(i, parallel.batch_sharded(mesh)), gamma)
    jax.block_until_ready(state)  # see parallel.serialize_collectives
  assert step._cache_size() == 1
  assert int(state.step) == 3


def test_training_reduces_loss_and_matches_an_unrolled_reference():
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  tc = w.TrainConfig(
    steps=300, batch_size=256, learning_rate=1e-2, warmup_steps=10, log_every=50, grad_clip=None
  )
  state, hist = train_lib.train(cfg, tc, _source(batch_size=256), progress=False)
  loss = hist.column("loss")
  assert loss[-1] < 0.5 * loss[0]
  # The jitted, sharded loop equals a plain Python loop of value_and_grad + optax.
  import optax

  opt = optim.make_optimizer(cfg, tc)
  p = w.models.init(cfg, jax.random.key(tc.seed))
  s = opt.init(p)
  src = _source(batch_size=256)
  for t in range(tc.steps):
    x = src.batch(t)
    g = jax.grad(lambda q: w.sae_loss(cfg, q, x)[0])(p)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
  assert_close(state.params, p, rtol=1e-4, atol=1e-5)


def test_nan_stops_and_returns_last_finite_state():
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  good = np.asarray(_source().sample(0, 64 * 10)[1]).reshape(10, 64, 8)
  batches = [good[i] for i in range(10)]
  bad = batches[6].copy()
  bad[3, 2] = np.nan
  batches[6] = bad
  tc = w.TrainConfig(steps=10, batch_size=64, log_every=5, warmup_steps=0)
  with pytest.warns(RuntimeWarning, match="non-finite at step 6"):
    state, hist = train_lib.train(cfg, tc, iter(batches), progress=False)
  assert hist.diverged_at == 6
  assert int(state.step) == 6
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(state.params))
  # The returned state is exactly the state after 6 clean steps.
  ref, _ = train_lib.train(
    cfg,
    w.TrainConfig(steps=6, batch_size=64, log_every=5, warmup_steps=0),
    iter(batches[:6]),
    progress=False,
  )
  assert_close(state.params, ref.params, rtol=0, atol=0)


def test_topk_auxk_revives_dead_latents():
  cfg = w.TopKSAEConfig(d_in=8, d_sae=32, k=2, dead_after_tokens=64 * 5)
  tc = w.TrainConfig(steps=400, batch_size=64, learning_rate=3e-3, log_every=100)
  state, hist = train_lib.train(cfg, tc, _source(sparsity=0.7), progress=False)
  assert np.isfinite(hist.column("loss")).all()
  assert_close(jnp.linalg.norm(state.params["W_dec"], axis=1), np.ones(32), atol=1e-5)
  assert hist.last()["l0"] <= 2.0
  assert hist.column("aux_k").max() > 0  # dead latents were seen and the AuxK term was active


def test_array_source_visits_every_row_once_per_epoch():
  x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
  src = w.ArraySource(x, 8, seed=3)
  seen = np.concatenate([np.asarray(src.batch(t))[:, 0] for t in range(5)])
  assert sorted(seen.tolist()) == sorted(x[:, 0].tolist())
  nxt = np.concatenate([np.asarray(src.batch(t))[:, 0] for t in range(5, 10)])
  assert sorted(nxt.tolist()) == sorted(x[:, 0].tolist())
  assert not np.array_equal(seen, nxt)  # a new order each epoch


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(data=np.ones((100, 5), np.float32)), "d_in=5 but the SAE config has d_in=8"),
    (dict(data=np.full((100, 8), np.nan, np.float32)), "non-finite"),
    (dict(data=np.ones((100, 8), np.int64)), "floating-point"),
    (dict(data=np.ones(800, np.float32)), "rank 2"),
    (dict(gamma=np.ones(7)), r"gamma must have shape \(8,\)"),
    (dict(gamma=-np.ones(8)), "gamma must lie in"),
    (dict(tc=w.TrainConfig(steps=5, batch_size=66)), "divisible by the 4 devices"),
  ],
)
def test_bad_training_input_raises_before_training(kwargs, match, four_devices):
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  data = kwargs.get("data", np.ones((200, 8), np.float32))
  tc = kwargs.get("tc", w.TrainConfig(steps=5, batch_size=64))
  with pytest.raises(w.WSAEInputError, match=match):
    train_lib.train(
      cfg,
      tc,
      data,
      gamma=kwargs.get("gamma"),
      mesh=parallel.data_mesh(four_devices),
      progress=False,
    )


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(steps=0), "steps must be >= 1"),
    (dict(learning_rate=0.0), "learning_rate must lie in"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(b2=1.0), "b2 must lie in"),
  ],
)
def test_bad_train_config_raises(kwargs, match):
  with pytest.raises(w.WSAEInputError, match=match):
    w.TrainConfig(**kwargs)


@pytest.mark.parametrize("arch", sorted(w.models.ARCHITECTURES))
def test_the_step_is_traced_once_and_keeps_the_state_structure(arch, monkeypatch):
  """Every architecture's loss is traced once for a whole run (no retrace per step or record),
  and a step returns a state of the same structure, shapes and dtypes (donation relies on it)."""
  chex = pytest.importorskip("chex", reason="chex is in the test extra")
  extra = {"topk": {"k": 3}, "batchtopk": {"k": 3.0}, "matryoshka_batchtopk": {"k": 3.0}}.get(
    arch, {}
  )
  cfg = w.make_config(arch, d_in=8, d_sae=16, **extra)
  chex.clear_trace_counter()  # the count is kept per function, across tests
  monkeypatch.setattr(w.models, "sae_loss", chex.assert_max_traces(w.models.sae_loss, n=1))
  tc = w.TrainConfig(steps=12, batch_size=64, log_every=4, warmup_steps=2)
  state0 = state_lib.init_state(cfg, tc)
  shapes0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state0)
  state, hist = train_lib.train(cfg, tc, _source(batch_size=64), state=state0, progress=False)
  assert len(hist.records) == 3
  chex.assert_trees_all_equal_shapes_and_dtypes(shapes0, state)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_bfloat16_products_train_like_float32(arch):
  """compute_dtype="bfloat16": the loss's products run in bf16 (seen in the compiled program),
  parameters and optimiser state stay float32, and training ends within 5% of float32's loss
  and L_GT on a synthetic problem (bf16 keeps 8 significant bits)."""
  W = w.polygon_matrix(4, 3, n_mono=4)
  cfg = w.make_config(arch, d_in=12, d_sae=16, **({"k": 4} if arch == "topk" else {}))
  out = {}
  for dtype in ("float32", "bfloat16"):
    tc = w.TrainConfig(steps=400, batch_size=256, learning_rate=3e-3, compute_dtype=dtype)
    src = w.SyntheticSource(W, 0.8, 256, seed=0)
    state, hist = w.train(cfg, tc, src, progress=False)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state.params))
    assert all(
      a.dtype == jnp.float32
      for a in jax.tree.leaves(state.opt_state)
      if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
    )
    x, _ = src.sample(2**30, 4096)
    out[dtype] = (hist.records[-1]["loss"], w.evaluate(cfg, state.params, x, W)["l_gt"])
    step = w.make_train_step(cfg, tc)
    text = step.lower(state, jnp.zeros((256, 12)), None).as_text()
    assert ("bf16" in text) == (dtype == "bfloat16")
  for a, b in zip(out["float32"], out["bfloat16"]):
    assert abs(b - a) <= 0.05 * abs(a) + 1e-4, out
  with pytest.raises(w.WSAEInputError, match="compute_dtype must be one of"):
    w.TrainConfig(compute_dtype="float16")

"""Latent-sharded training (issue 34): the latents split over a "latent" mesh axis, exact sparsity
across the shards (`models.latent_shards`), equal results on 1 and 4 devices, the collectives the
compiled step may hold, checkpoints across meshes, and the bad-input cases."""

import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import models, parallel
from wsae_jax.data import problems
from wsae_jax.models import batchtopk, latent_shards, selection
from wsae_jax.storage import checkpoint
from wsae_jax.storage import saelens as io
from wsae_jax.training import state as state_lib
from wsae_jax.training import sweep
from wsae_jax.training import trainer as train_lib
from wsae_jax.training.config import resolve_run_defaults

W_P = w.polygon_matrix(3, 3, n_mono=2)  # d_in 8
TC = w.TrainConfig(steps=10, batch_size=64, learning_rate=1e-2, warmup_steps=2, log_every=5)
GAMMA = np.linspace(0.5, 1.5, 8).astype(np.float32)
AUX = {"dead_after_tokens": 64}  # most latents are dead from step 1: AuxK acts on every step
WIDTHS = {"matryoshka_widths": (6, 20, 32)}  # prefixes that end inside shards of 8 and of 16
VARIANTS = {
  "tied": ("tied", {}),
  "relu": ("relu", {}),
  "jumprelu": ("jumprelu", {}),
  "gated": ("gated", {}),
  "topk": ("topk", {"k": 3, "sparse_path": False, **AUX}),
  "topk-sparse": ("topk", {"k": 3, "sparse_path": True, **AUX}),
  "batchtopk": ("batchtopk", {"k": 3.0, **AUX}),
  "batchtopk-sparse": ("batchtopk", {"k": 3.0, "sparse_path": True, **AUX}),
  "matryoshka": ("matryoshka_batchtopk", {"k": 3.0, **WIDTHS, **AUX}),
  "matryoshka-sparse": ("matryoshka_batchtopk", {"k": 3.0, "sparse_path": True, **WIDTHS, **AUX}),
}


# Variants whose step runs `latent_shards`' hand-written shard_maps beyond the Top-k selection.
SPLIT_BY_HAND = ("topk-sparse", "batchtopk", "batchtopk-sparse", "matryoshka", "matryoshka-sparse")


def _cfg(variant, d_sae=32):
  arch, extra = VARIANTS[variant]
  return w.make_config(arch, d_in=8, d_sae=d_sae, **extra)


def _src():
  return w.SyntheticSource(W_P, 0.8, TC.batch_size, seed=0)


def _meshes(devices):
  """1 device; 4 latent shards; 2 data x 2 latent shards."""
  return {
    "1": parallel.data_mesh(devices[:1]),
    "latent4": parallel.training_mesh(4, devices),
    "data2xlatent2": parallel.training_mesh(2, devices),
  }


def _loss_and_grad(cfg, mesh, params, x, gamma, dead):
  """The loss, its gradient and the metrics of one batch, compiled on `mesh` with the parameters
  split as training splits them."""
  shard = parallel.state_shardings(mesh, params)

  def f(p, x):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      fn = lambda q: models.sae_loss(cfg, q, x, gamma=gamma, dead_M=dead)
      return jax.value_and_grad(fn, has_aux=True)(p)

  out = jax.jit(f, in_shardings=(shard, parallel.batch_sharded(mesh)))(params, x)
  return jax.device_get(out)


# γ enters every loss the same way (`reconstruction_loss`): every variant with γ, one without.
PLAIN = ("topk-sparse",)


@pytest.mark.parametrize(
  "variant, weighted", [(v, True) for v in VARIANTS] + [(v, False) for v in PLAIN]
)
def test_sharded_loss_and_gradient_equal_one_device(variant, weighted, four_devices):
  """Loss, every metric (l0, the fired mask, AuxK's term) and every gradient of one batch, with γ
  and without, with a dead-latent mask, on 4 latent shards and on 2 x 2 equal the 1-device
  computation."""
  cfg = resolve_run_defaults(_cfg(variant), TC)
  params = jax.device_get(models.init(cfg, jax.random.key(1)))
  params = {k: v + 0.01 * np.arange(v.size).reshape(v.shape) % 0.07 for k, v in params.items()}
  x = np.asarray(_src().batch(0))
  dead = np.arange(cfg.d_sae) % 3 == 0 if models.get(cfg).uses_dead_latents else None
  meshes = _meshes(four_devices)
  gamma = GAMMA if weighted else None
  (l1, m1), g1 = _loss_and_grad(cfg, meshes["1"], params, x, gamma, dead)
  for name in ("latent4", "data2xlatent2"):
    (ln, mn), gn = _loss_and_grad(cfg, meshes[name], params, x, gamma, dead)
    assert_close(ln, l1, rtol=1e-5, atol=1e-7, err_msg=name)
    assert_close(mn, m1, rtol=1e-5, atol=1e-6, err_msg=name)
    assert_close(gn, g1, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sharded_training_equals_one_device(variant, four_devices):
  """10 Adam steps (with γ, AuxK active): parameters, optimiser state, dead-latent counters and the
  loss history on 4 latent shards (and on 2 x 2 for the variants with hand-written shard_maps)
  equal the 1-device run's to 1e-5 relative; the state stays split (each device holds a quarter
  or a half of every per-latent array)."""
  cfg = _cfg(variant)
  runs = {}
  meshes = _meshes(four_devices)
  if variant not in SPLIT_BY_HAND:  # the partitioner's own split: one sharded mesh suffices here
    del meshes["data2xlatent2"]  # (the loss and gradient test covers both for every variant)
  for name, mesh in meshes.items():
    state, hist = train_lib.train(cfg, TC, _src(), gamma=GAMMA, mesh=mesh, progress=False)
    n = parallel.latent_shard_count(mesh)
    for key in ("W_enc", "W_dec"):
      if key in state.params:
        shard = state.params[key].addressable_shards[0].data
        assert shard.size * n == state.params[key].size, (name, key)
    assert state.tokens_since_fired.addressable_shards[0].data.size * n == cfg.d_sae
    runs[name] = jax.device_get((state.params, state.opt_state, state.tokens_since_fired))
    runs[name + "/loss"] = hist.column("loss")
  for name in set(meshes) - {"1"}:
    assert_close(runs[name], runs["1"], rtol=1e-5, atol=1e-6, err_msg=name)
    assert_close(runs[name + "/loss"], runs["1/loss"], rtol=1e-5, atol=1e-7, err_msg=name)


def test_training_without_gamma_on_shards_equals_one_device(four_devices):
  cfg = _cfg("topk-sparse")
  out = []
  for mesh in (parallel.data_mesh(four_devices[:1]), parallel.training_mesh(4, four_devices)):
    state, _ = train_lib.train(cfg, TC, _src(), mesh=mesh, progress=False)
    out.append(jax.device_get(state.params))
  assert_close(out[1], out[0], rtol=1e-5, atol=1e-6)


# The sparse path's and Matryoshka's custom VJPs around shard_map, inside the sweep's shard_map.
@pytest.mark.parametrize("variant", ["topk-sparse", "matryoshka"])
def test_sweep_with_latent_shards_equals_one_device(variant, four_devices):
  """A sweep whose members' latents are split (2 members x 2 latent shards, and 1 x 4) trains
  every member as the 1-device sweep does (AuxK active, γ per member through α); splitting both
  each batch and the latents is refused."""
  cfg = _cfg(variant)
  members = sweep.grid(seed=[0, 1], alpha=[0.0, 1.0], sparsity=[0.8])
  problem = problems.SyntheticProblem(W_P)
  tc = w.TrainConfig(steps=10, batch_size=64, learning_rate=1e-2, warmup_steps=2, log_every=5)
  runs = {}
  for name, mesh in (
    ("1", sweep.sweep_mesh(4, four_devices[:1])),
    ("2x2", sweep.sweep_mesh(4, four_devices, latent_shards=2)),
    ("1x4", sweep.sweep_mesh(4, four_devices, latent_shards=4)),
  ):
    res = sweep.train_sweep(cfg, tc, members, problem, progress=False, mesh=mesh)
    n = parallel.latent_shard_count(mesh)
    assert res.states.params["W_enc"].addressable_shards[0].data.shape[-1] * n == cfg.d_sae
    runs[name] = jax.device_get((res.states.params, res.states.tokens_since_fired))
  assert_close(runs["2x2"], runs["1"], rtol=1e-5, atol=1e-6)
  assert_close(runs["1x4"], runs["1"], rtol=1e-5, atol=1e-6)
  with pytest.raises(w.WSAEInputError, match="not both"):
    mesh = sweep.sweep_mesh(2, four_devices, data_parallel=2, latent_shards=2)
    sweep.train_sweep(cfg, tc, members[:2], problem, progress=False, mesh=mesh)


def _tied_values(rng, shape, levels=4):
  """Values from a few levels: every row is full of ties, at the selection's edge too."""
  return rng.integers(0, levels, shape).astype(np.float32) - 1.0


def _sharded(mesh, f, *args, spec=None):
  spec = spec or jax.sharding.PartitionSpec(parallel.DATA_AXIS, parallel.LATENT_AXIS)

  def g(*a):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return f(*a)

  sharding = jax.sharding.NamedSharding(mesh, spec)
  return jax.device_get(jax.jit(g, in_shardings=(sharding,) + (None,) * (len(args) - 1))(*args))


@pytest.mark.parametrize("k", [1, 3, 8, 11])  # a shard of latent-4 holds 8 latents, of 2x2 16
def test_selection_across_shards_is_lax_top_k_ties_included(k, four_devices):
  """Top-k across shards keeps exactly what `lax.top_k` keeps on one device, on rows full of ties,
  including k above one shard's width; the first `k_active` ranks likewise."""
  rng = np.random.default_rng(k)
  pre = _tied_values(rng, (16, 32))
  want_idx = np.asarray(jax.lax.top_k(pre, k)[1])
  want = np.asarray(selection.topk_activation(pre, k, method="top_k"))
  want_active = np.asarray(selection.topk_activation(pre, k, max(1, k - 2), method="top_k"))
  for mesh in list(_meshes(four_devices).values())[1:]:
    idx = _sharded(mesh, lambda p: latent_shards.top_k(p, k)[1], pre)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(
      _sharded(mesh, lambda p: latent_shards.topk_activation(p, k), pre), want
    )
    active = _sharded(mesh, lambda p: latent_shards.topk_activation(p, k, max(1, k - 2)), pre)
    np.testing.assert_array_equal(active, want_active)


@pytest.mark.parametrize("count", [0, 1, 5, 40, 511, 512, 600])
def test_batch_selection_across_shards_is_the_flat_top_k(count, four_devices):
  """BatchTopK's selection over data and latent shards keeps the `count` largest of the whole
  batch, ties to the lower row then the lower latent (lax.top_k of the flattened batch); a count
  of 0 keeps nothing, one above the batch's size keeps everything."""
  rng = np.random.default_rng(count)
  relu = np.maximum(_tied_values(rng, (16, 32), levels=5), 0)
  flat = relu.reshape(-1)
  want = np.zeros(flat.size, bool)
  want[np.asarray(jax.lax.top_k(flat, min(count, flat.size))[1])] = True
  for mesh in list(_meshes(four_devices).values())[1:]:
    got = _sharded(mesh, lambda r: latent_shards.batch_mask(r, count), relu)
    np.testing.assert_array_equal(got.reshape(-1), want)
    k = count / relu.shape[0]  # the traced count (a sweep's k) sends every entry as a candidate
    traced = _sharded(
      mesh,
      lambda r, kk: latent_shards.batch_mask(r, batchtopk._count(kk, r.shape[0])),
      relu,
      jnp.float32(k),
    )
    np.testing.assert_array_equal(traced.reshape(-1), want)


def _collectives(compiled_text: str):
  """`(op, [element counts of its operands' results])` of every collective in an HLO module."""
  out = []
  pattern = r"= (\(?[^=]*?\)?) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
  for line in compiled_text.splitlines():
    m = re.search(pattern + r"(-start)?\(", line)
    if m:
      dims = re.findall(r"\w+\[([\d,]*)\]", m.group(1))
      sizes = [int(np.prod([int(d) for d in s.split(",") if d] or [1])) for s in dims]
      out.append((m.group(2), sizes))
  return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_step_moves_no_dictionary_between_shards(variant, four_devices):
  """Every architecture's training step on 4 latent shards (d_in 48, d_sae 4096, batch 256): no
  collective carries as much as one shard of the dictionary (d_in x d_sae / 4) or of the
  pre-activations, so no later change can silently all-gather either. Each (batch, d_in)
  reconstruction (the main one, AuxK's, the gated SAE's gate path, BatchTopK's dense fallback
  beside its sparse path) is summed over the shards once forward and at most once backward, and
  one more sum carries the encoder's input gradient (to b_dec)."""
  arch, extra = VARIANTS[variant]
  extra = {k: v for k, v in extra.items() if k not in ("matryoshka_widths", "dead_after_tokens")}
  extra = {**extra, **({"aux_k": 8} if "k" in extra else {})}
  if arch == "matryoshka_batchtopk":
    extra["matryoshka_widths"] = (100, 700, 4096)
  B, D, M = 256, 48, 4096
  cfg = w.make_config(arch, d_in=D, d_sae=M, **extra)
  tc = w.TrainConfig(steps=10, batch_size=B)
  mesh = parallel.training_mesh(4, four_devices)
  step = train_lib.make_train_step(cfg, tc, mesh=mesh)
  shapes = jax.eval_shape(lambda: state_lib.new_state(resolve_run_defaults(cfg, tc), tc))
  x = jax.ShapeDtypeStruct((B, D), jnp.float32)
  text = step.lower(shapes, x, jax.ShapeDtypeStruct((D,), jnp.float32)).compile().as_text()
  found = _collectives(text)
  assert all(max(sizes) < D * M // 4 for _, sizes in found), found
  recon = [op for op, sizes in found if B * D in sizes]
  fallback = arch != "topk" and variant.endswith("sparse")
  reconstructions = 1 + models.get(cfg).uses_dead_latents + (arch == "gated") + fallback
  assert 1 <= len(recon) <= 2 * reconstructions + 1, found


def test_memory_per_device_is_a_quarter_on_four_shards(four_devices):
  """`memory_analysis()` of the compiled Top-k step: the state (arguments) each device holds on 4
  latent shards is a quarter of the 1-device state, plus the replicated b_dec and scalars."""
  cfg = w.TopKSAEConfig(d_in=64, d_sae=4096, k=8)
  tc = w.TrainConfig(steps=10, batch_size=256)
  shapes = jax.eval_shape(lambda: state_lib.new_state(resolve_run_defaults(cfg, tc), tc))
  args = {}
  for n, mesh in ((1, parallel.data_mesh(four_devices[:1])), (4, _meshes(four_devices)["latent4"])):
    step = train_lib.make_train_step(cfg, tc, mesh=mesh)
    lowered = step.lower(shapes, jax.ShapeDtypeStruct((256, 64), jnp.float32), None)
    args[n] = lowered.compile().memory_analysis().argument_size_in_bytes
  batch = 256 * 64 * 4  # each device of a latent-only mesh reads the whole batch
  state = args[1] - batch
  assert state >= 6 * 64 * 4096 * 4  # W_enc, W_dec and their two Adam moments at least
  # What is not split (b_dec and its moments, step counters) is under 1 KiB.
  assert state / 4 <= args[4] - batch <= state / 4 + 1024, args


def test_checkpoint_of_four_shards_resumes_on_one_device_and_two_shards(tmp_path, four_devices):
  """A run checkpointed on 4 latent shards is restored exactly (bit for bit) onto 1 device and
  onto 2 shards, resumes on 4 shards bit-identically to the uninterrupted run, on 1 device and 2
  shards equal to it to float32 rounding; the SAELens folder written from split parameters equals
  the 1-device run's."""
  cfg = _cfg("topk-sparse")
  tc = w.TrainConfig(steps=20, batch_size=64, learning_rate=1e-2, warmup_steps=2, log_every=5)
  meshes = _meshes(four_devices)
  full, _ = train_lib.train(cfg, tc, _src(), mesh=meshes["latent4"], progress=False)
  ck = checkpoint.Checkpointer(tmp_path / "ck", every=10, keep=3)
  train_lib.train(cfg, tc, _src(), mesh=meshes["latent4"], progress=False, checkpointer=ck)
  saved = jax.device_get(full.params)
  shutil.rmtree(ck.path(20))  # resume from step 10
  at_10 = None
  for name in ("latent4", "1", "data2xlatent2"):
    mesh = meshes[name]
    target = state_lib.init_state(resolve_run_defaults(cfg, tc), tc, mesh=mesh)
    restored, _ = checkpoint.Checkpointer(tmp_path / "ck", every=10).restore(10, target)
    assert restored.params["W_dec"].sharding.mesh.shape == mesh.shape
    host = jax.device_get(restored)
    at_10 = host if at_10 is None else at_10
    assert_close(host.params, at_10.params, rtol=0, atol=0, err_msg=name)
    assert_close(host.opt_state, at_10.opt_state, rtol=0, atol=0, err_msg=name)
    copy = tmp_path / f"ck-{name}"
    shutil.copytree(tmp_path / "ck", copy)
    resumed, _ = train_lib.train(
      cfg,
      tc,
      _src(),
      mesh=mesh,
      progress=False,
      checkpointer=checkpoint.Checkpointer(copy, every=10, keep=3),
      resume=True,
    )
    tol = 0 if name == "latent4" else 1e-5
    assert_close(jax.device_get(resumed.params), saved, rtol=tol, atol=tol / 10, err_msg=name)
    io.save_saelens(tmp_path / f"sae-{name}", cfg, resumed.params)
    _, exported = io.load_saelens(tmp_path / f"sae-{name}")
    assert_close(exported, saved, rtol=tol, atol=tol / 10, err_msg=name)


@pytest.mark.parametrize(
  "d_sae, shards, match",
  [
    (30, 4, r"d_sae = 30 cannot be split over 4 latent shards.*d_sae = 28 or 32.*\[1, 2\]"),
    (32, 3, r"latent_shards = 3 does not divide the 4 device\(s\); use one of \[1, 2, 4\]"),
    (32, 8, r"latent_shards = 8 does not divide the 4 device\(s\)"),
  ],
)
def test_bad_shard_counts_are_refused_before_training(d_sae, shards, match, four_devices):
  with pytest.raises(w.WSAEInputError, match=match):
    mesh = parallel.training_mesh(shards, four_devices)
    train_lib.train(_cfg("relu", d_sae=d_sae), TC, _src(), mesh=mesh, progress=False)

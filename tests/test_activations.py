"""The activation store on small synthetic shards: order, coverage, resume, checks, memory."""

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import parallel
from wsae_jax.data.store import ActivationStore, ActivationWriter, read_metadata
from wsae_jax.storage import checkpoint
from wsae_jax.training import trainer as train_lib

D, CTX, SHARDS, PER_SHARD = 6, 8, 5, 48  # 5 shards x 48 rows (6 contexts of 8)


def _rows(n_rows):
  """Row r holds r in column 0 (exact in float16 up to 2048) and smooth data elsewhere."""
  r = np.arange(n_rows, dtype=np.float32)
  x = np.stack([r] + [np.sin(r * (j + 1) / 7.0) for j in range(D - 1)], axis=1)
  return x


@pytest.fixture
def store_dir(tmp_path):
  w_ = ActivationWriter(tmp_path / "store", d_in=D, dtype="float16", context_len=CTX, model="fake")
  x = _rows(SHARDS * PER_SHARD)
  for i in range(SHARDS):
    sl = slice(i * PER_SHARD, (i + 1) * PER_SHARD)
    w_.write_shard(i, x[sl], tokens=np.arange(SHARDS * PER_SHARD)[sl] + 1000)
  return tmp_path / "store"


def _ids(rows):
  return rows[:, 0].astype(np.int64)


def test_metadata_and_ordered_reading(store_dir):
  meta, shards = read_metadata(store_dir)
  assert meta["n_tokens"] == SHARDS * PER_SHARD and meta["context_len"] == CTX
  assert meta["model"] == "fake" and len(shards) == SHARDS
  store = ActivationStore(store_dir, 10, shuffle=False, prefetch=0)
  kept = [r for r in range(SHARDS * PER_SHARD) if r % CTX != 0]  # position 0 dropped
  assert store.n_tokens == len(kept)
  x, tok = store.read_all(with_tokens=True)
  assert _ids(x).tolist() == kept
  assert tok.tolist() == [k + 1000 for k in kept]
  np.testing.assert_allclose(x, _rows(SHARDS * PER_SHARD)[kept].astype(np.float16), rtol=0)
  # Unshuffled batches walk the file in order, across shard boundaries, and wrap to the start.
  stream = np.concatenate([store.host_batch(t) for t in range(store.steps_per_epoch + 1)])
  assert _ids(stream).tolist()[: len(kept)] == kept[: len(stream)]
  keep_all = ActivationStore(store_dir, 10, shuffle=False, drop_first_position=False, prefetch=0)
  assert keep_all.n_tokens == SHARDS * PER_SHARD


@pytest.mark.parametrize("buffer_tokens,chunk_tokens", [(16, 8), (64, 16), (10_000, 24)])
def test_every_token_once_per_epoch(store_dir, buffer_tokens, chunk_tokens):
  store = ActivationStore(
    store_dir, 7, buffer_tokens=buffer_tokens, chunk_tokens=chunk_tokens, seed=3, prefetch=0
  )
  n = store.n_tokens
  kept = sorted(r for r in range(SHARDS * PER_SHARD) if r % CTX != 0)
  epoch0, epoch1 = _ids(store.stream(0, n)), _ids(store.stream(n, n))
  assert sorted(epoch0) == kept and sorted(epoch1) == kept
  assert epoch0.tolist() != kept  # shuffled ...
  assert epoch0.tolist() != epoch1.tolist()  # ... differently each epoch
  # Batches are consecutive slices of that stream, straddling the epoch boundary.
  steps = 2 * n // 7
  batches = np.concatenate([store.host_batch(t) for t in range(steps)])
  assert _ids(batches).tolist() == np.concatenate([epoch0, epoch1])[: steps * 7].tolist()


def test_random_access_and_prefetch_match_sequential(store_dir):
  seq = ActivationStore(store_dir, 9, buffer_tokens=24, chunk_tokens=8, seed=1, prefetch=0)
  want = [seq.host_batch(t) for t in range(40)]
  with ActivationStore(store_dir, 9, buffer_tokens=24, chunk_tokens=8, seed=1, prefetch=3) as pre:
    got = [np.asarray(pre.batch(t)) for t in range(40)]
    jumped = [np.asarray(pre.batch(t)) for t in (31, 5, 6, 39)]  # a resume jumps anywhere
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)
  for t, b in zip((31, 5, 6, 39), jumped):
    np.testing.assert_array_equal(want[t], b)
  other_seed = ActivationStore(store_dir, 9, buffer_tokens=24, chunk_tokens=8, seed=2, prefetch=0)
  assert not np.array_equal(other_seed.host_batch(0), want[0])


def test_batches_are_sharded_over_the_data_mesh(store_dir, four_devices):
  mesh = parallel.data_mesh(four_devices)
  with ActivationStore(store_dir, 8, seed=0) as store:
    b = store.batch(2, parallel.batch_sharded(mesh))
    assert len(b.sharding.device_set) == 4 and b.addressable_shards[0].data.shape == (2, D)
    np.testing.assert_array_equal(np.asarray(b), store.host_batch(2))


def test_normalisation_scale(store_dir):
  raw = ActivationStore(store_dir, 8, prefetch=0)
  x = raw.read_all().astype(np.float64)
  store = ActivationStore(store_dir, 8, normalize=True, scale_rows=10**6, prefetch=0)
  assert store.scale == pytest.approx(np.sqrt(D) / np.linalg.norm(x, axis=1).mean(), rel=1e-6)
  epoch = store.stream(0, store.n_tokens).astype(np.float64)
  assert np.linalg.norm(epoch, axis=1).mean() == pytest.approx(np.sqrt(D), rel=1e-5)


def test_safetensors_shards_equal_npy(store_dir, tmp_path):
  from safetensors.numpy import save_file

  meta = json.loads((store_dir / "metadata.json").read_text())
  st = tmp_path / "st"
  st.mkdir()
  for s in meta["shards"]:
    arr = np.load(store_dir / s["file"])
    s["file"] = s["file"].replace(".npy", ".safetensors")
    save_file({"activations": arr}, str(st / s["file"]))
    shutil.copy(store_dir / s["tokens_file"], st / s["tokens_file"])
  (st / "metadata.json").write_text(json.dumps(meta))
  a = ActivationStore(store_dir, 11, seed=4, prefetch=0)
  b = ActivationStore(st, 11, seed=4, prefetch=0)
  for t in range(5):
    np.testing.assert_array_equal(a.host_batch(t), b.host_batch(t))


def test_bare_npy_file(tmp_path):
  x = _rows(64).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  store = ActivationStore(tmp_path / "x.npy", 16, shuffle=False, prefetch=0)
  assert store.n_tokens == 64 and not store.drop_first_position
  np.testing.assert_array_equal(store.host_batch(1), x[16:32])
  ctx = ActivationStore(tmp_path / "x.npy", 16, context_len=8, prefetch=0)
  assert ctx.n_tokens == 56


def test_nan_shard_raises_naming_the_shard(store_dir):
  bad = np.load(store_dir / "acts_00003.npy")
  bad[17, 2] = np.nan
  np.save(store_dir / "acts_00003.npy", bad)
  with pytest.raises(w.WSAEInputError, match=r"acts_00003\.npy.*row 17, column 2"):
    ActivationStore(store_dir, 8, validate=True)
  store = ActivationStore(store_dir, 8, buffer_tokens=8, chunk_tokens=8, shuffle=False)
  with pytest.raises(w.WSAEInputError, match=r"acts_00003\.npy: 1 non-finite"):
    for t in range(store.steps_per_epoch):
      store.batch(t)
  store.close()


def test_mismatched_shards_are_refused(store_dir):
  with pytest.raises(w.WSAEInputError, match="fewer than batch_size"):
    ActivationStore(store_dir, 10**6)
  with pytest.raises(w.WSAEInputError, match="out-of-range"):
    ActivationStore(store_dir, 8, shards=[SHARDS])
  np.save(store_dir / "acts_00001.npy", np.zeros((PER_SHARD, D), np.float32))
  with pytest.raises(w.WSAEInputError, match=r"acts_00001\.npy has dtype float32.*float16"):
    ActivationStore(store_dir, 8)
  np.save(store_dir / "acts_00001.npy", np.zeros((PER_SHARD, D + 1), np.float16))
  with pytest.raises(w.WSAEInputError, match=r"acts_00001\.npy has shape \(48, 7\)"):
    ActivationStore(store_dir, 8)
  np.save(store_dir / "acts_00001.npy", np.zeros((PER_SHARD - 8, D), np.float16))
  with pytest.raises(w.WSAEInputError, match="truncated"):
    ActivationStore(store_dir, 8)
  (store_dir / "acts_00001.npy").unlink()
  with pytest.raises(w.WSAEInputError, match=r"acts_00001\.npy listed in the metadata does not"):
    ActivationStore(store_dir, 8)


def test_writer_is_resumable_and_refuses_other_layouts(store_dir):
  again = ActivationWriter(store_dir, d_in=D, dtype="float16", context_len=CTX, model="fake")
  assert all(again.has_shard(i) for i in range(SHARDS)) and not again.has_shard(SHARDS)
  with pytest.raises(w.WSAEInputError, match="already holds a store"):
    ActivationWriter(store_dir, d_in=D + 1, dtype="float16", context_len=CTX)
  with pytest.raises(w.WSAEInputError, match="non-finite"):
    again.write_shard(7, np.full((8, D), np.inf))


def test_train_from_store_resumes_bit_identically(store_dir, tmp_path):
  cfg = w.TopKSAEConfig(d_in=D, d_sae=12, k=2)
  tc = w.TrainConfig(steps=12, batch_size=8, learning_rate=3e-3, warmup_steps=2, log_every=4)
  mk = lambda: ActivationStore(
    store_dir, 8, seed=5, normalize=True, buffer_tokens=32, chunk_tokens=8
  )
  full, hist = train_lib.train(cfg, tc, mk(), progress=False)
  assert len(hist.records) == 3 and np.isfinite(hist.column("loss")).all()
  ck = checkpoint.Checkpointer(tmp_path / "ck", every=4, keep=5)
  src = mk()
  train_lib.train(cfg, tc, src, progress=False, checkpointer=ck, normalization_scale=src.scale)
  shutil.rmtree(ck.path(12))
  shutil.rmtree(ck.path(8))
  src = mk()
  resumed, _ = train_lib.train(
    cfg,
    tc,
    src,
    progress=False,
    resume=True,
    checkpointer=checkpoint.Checkpointer(tmp_path / "ck", every=4),
    normalization_scale=src.scale,
  )
  assert int(resumed.step) == 12
  assert_close(jax.device_get(resumed.params), jax.device_get(full.params), rtol=0, atol=0)
  # Another data seed is another batch stream: resuming with it is refused.
  with pytest.raises(Exception, match="seed"):
    train_lib.train(
      cfg,
      tc,
      ActivationStore(store_dir, 8, seed=6, normalize=True),
      progress=False,
      resume=True,
      checkpointer=checkpoint.Checkpointer(tmp_path / "ck"),
      normalization_scale=src.scale,
    )


def test_memory_stays_bounded_by_the_buffer(tmp_path):
  """Streaming a 170 MB float16 file with a small buffer keeps the resident set small."""
  rows, d = 2**17, 640
  path = tmp_path / "big.npy"
  mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, d))
  for i in range(0, rows, 2**14):
    mm[i : i + 2**14] = np.random.default_rng(i).standard_normal((2**14, d), np.float32)
  mm.flush()
  del mm
  script = textwrap.dedent(f"""
      import resource, numpy as np
      from wsae_jax.data.store import ActivationStore
      store = ActivationStore({str(path)!r}, 1024, buffer_tokens=8192, chunk_tokens=2048, prefetch=2)
      store.batch(0)  # start JAX's runtime before the baseline
      base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      total = 0.0
      for t in range(store.steps_per_epoch):
          total += float(np.asarray(store.batch(t))[:, 0].sum())
      peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      print((peak - base) / 1024)
  """)
  out = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    timeout=600,
    env={**__import__("os").environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
  )
  assert out.returncode == 0, out.stderr[-2000:]
  growth_mb = float(out.stdout.strip().splitlines()[-1])
  file_mb = path.stat().st_size / 2**20
  # The float32 buffer of 8192 x 640 is 21 MB; the file is 160 MB. Without releasing the
  # mapped pages the resident set grows by the whole file (measured: +245 MB).
  assert growth_mb < 0.4 * file_mb, (growth_mb, file_mb)

"""An activation store: language-model activations on disk, streamed as shuffled device batches.

On disk a store is a folder of shards plus ``metadata.json``::

    {"format": "wsae-activations/1", "model": "...", "layer": 15, "hook": "...",
     "d_in": 576, "dtype": "float16", "context_len": 256, "n_tokens": 917504,
     "shards": [{"file": "acts_00000.npy", "n_tokens": 16384, "tokens_file": "tokens_00000.npy"},
                ...]}

Shards are ``.npy`` files (read through a memory map; pages are released after each chunk is
copied, so resident memory stays bounded by the shuffle buffer however large the files are) or
``.safetensors`` files holding a tensor named ``activations``. A bare ``(tokens, d_in)`` ``.npy``
file works too. ``tokens_file`` (optional) holds the token id of each row.

:class:`ActivationStore` is a batch source for :func:`wsae_jax.training.trainer.train`: batch ``t`` is a
function of ``(seed, t)`` only, so a resumed run sees exactly the batches of an uninterrupted one.
Each epoch visits every kept row exactly once: the chunks (contiguous row blocks) are put in a
random order, consecutive chunks fill a buffer of ``buffer_tokens`` rows, the buffer is shuffled
and cut into batches. A background thread prepares the next batches while the device trains.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import mmap
import pathlib
from typing import Iterator

import jax
import numpy as np

from wsae_jax import _validate as V
from wsae_jax.data import sources as data_lib
from wsae_jax.storage import records

__all__ = [
  "FORMAT",
  "META_NAME",
  "ActivationStore",
  "ActivationWriter",
  "ShardInfo",
  "read_metadata",
]

FORMAT = "wsae-activations/1"
META_NAME = "metadata.json"
_WRITE_DTYPES = ("float16", "float32")  # what ActivationWriter writes
_SHARD_DTYPES = _WRITE_DTYPES + ("bfloat16",)  # what a store's metadata may declare
_ARRAY_DTYPES = _SHARD_DTYPES + ("float64",)  # what a bare .npy file may hold
# metadata.json's schema (other top-level fields are provenance and are kept as they are).
_META_REQUIRED = {"d_in": int, "dtype": str, "shards": list}
_META_OPTIONAL = {"format": str, "context_len": (int, type(None)), "n_tokens": (int, type(None))}
_SHARD_REQUIRED = {"file": str, "n_tokens": int}
_SHARD_OPTIONAL = {"tokens_file": (str, type(None))}


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  path: pathlib.Path
  n_tokens: int
  tokens_path: pathlib.Path | None = None

  @property
  def kind(self) -> str:
    return "safetensors" if self.path.suffix == ".safetensors" else "npy"


def read_metadata(path) -> tuple[dict, list[ShardInfo]]:
  """The metadata dict and shard list of a store folder, its ``metadata.json`` or a bare .npy."""
  path = pathlib.Path(path)
  if not path.exists():
    raise V.WSAEInputError(f"activation path {str(path)!r} does not exist.")
  if path.is_file() and path.suffix != ".json":
    arr = _open_npy(path)
    if arr.ndim != 2:
      raise V.WSAEInputError(
        f"{path} has shape {arr.shape} (rank {arr.ndim}); activations must "
        f"have rank 2: (tokens, d_in)."
      )
    if str(arr.dtype) not in _ARRAY_DTYPES:
      raise V.WSAEInputError(
        f"{path} has dtype {arr.dtype}; activations must be a floating-point "
        f"array ({', '.join(_ARRAY_DTYPES)}). Convert with x.astype(np.float32)."
      )
    meta = {
      "format": FORMAT,
      "d_in": int(arr.shape[1]),
      "dtype": str(arr.dtype),
      "n_tokens": int(arr.shape[0]),
      "context_len": None,
      "shards": [{"file": path.name, "n_tokens": int(arr.shape[0])}],
    }
    return meta, [ShardInfo(path, int(arr.shape[0]))]
  meta_path = path / META_NAME if path.is_dir() else path
  if not meta_path.exists():
    raise V.WSAEInputError(
      f"{str(path)!r} is neither a .npy file nor a store folder with {META_NAME}; pass a "
      f"(tokens, d_in) .npy file or a folder written by ActivationWriter / experiments/harvest.py."
    )
  try:
    meta = json.loads(meta_path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise V.WSAEInputError(f"{meta_path} is not valid JSON: {e}") from None
  # Provenance fields (model, layer, hook, tokens/s, …) are free; the ones read here are checked.
  V.check_fields(str(meta_path), meta, _META_REQUIRED, _META_OPTIONAL, allow_unknown=True)
  if meta["dtype"] not in _SHARD_DTYPES:
    raise V.WSAEInputError(f"{meta_path}: dtype {meta['dtype']!r} is not one of {_SHARD_DTYPES}.")
  if meta["d_in"] < 1:
    raise V.WSAEInputError(f"{meta_path}: field 'd_in' must be >= 1, got {meta['d_in']}.")
  if meta.get("context_len") is not None and meta["context_len"] < 1:
    raise V.WSAEInputError(
      f"{meta_path}: field 'context_len' must be >= 1 or null, got {meta['context_len']}."
    )
  if not meta["shards"]:
    raise V.WSAEInputError(f"{meta_path}: 'shards' is empty; the store holds no activations.")
  root = meta_path.parent
  shards: list[ShardInfo] = []
  seen: dict = {}
  for i, s in enumerate(meta["shards"]):
    where = f"{meta_path}: shards[{i}]"
    V.check_fields(where, s, _SHARD_REQUIRED, _SHARD_OPTIONAL)
    if s["n_tokens"] < 0:
      raise V.WSAEInputError(f"{where}: field 'n_tokens' must be >= 0, got {s['n_tokens']}.")
    path = _inside(root, s["file"], f"{where}.file")
    if path in seen:
      raise V.WSAEInputError(
        f"{where}: shard {s['file']!r} is already listed as shards[{seen[path]}]; "
        f"each shard may appear once (its rows would be counted twice)."
      )
    seen[path] = i
    tokens = (
      _inside(root, s["tokens_file"], f"{where}.tokens_file") if s.get("tokens_file") else None
    )
    shards.append(ShardInfo(path, s["n_tokens"], tokens))
  total = sum(s.n_tokens for s in shards)
  if meta.get("n_tokens") is not None and meta["n_tokens"] != total:
    raise V.WSAEInputError(
      f"{meta_path}: 'n_tokens' is {meta['n_tokens']} but the shards list "
      f"{total} rows{_disagreeing_shards(shards)}; the metadata is stale."
    )
  return meta, shards


def _disagreeing_shards(shards) -> str:
  """ ", of which SHARD lists N but holds M rows" for shards whose file disagrees with its entry
  (read from the .npy headers only)."""
  bad = []
  for s in shards:
    try:
      rows = int(_open_npy(s.path).shape[0]) if s.path.suffix == ".npy" else None
    except (V.WSAEInputError, IndexError):  # unreadable: the shard check will name it
      rows = None
    if rows is not None and rows != s.n_tokens:
      bad.append(f"{s.path.name} lists {s.n_tokens} but holds {rows} rows")
  return f" ({'; '.join(bad)})" if bad else ""


def _inside(root: pathlib.Path, name: str, where: str) -> pathlib.Path:
  """`root / name`, refused unless it stays inside the store folder (no absolute paths, no ..)."""
  path = (root / name).resolve()
  if pathlib.PurePath(name).is_absolute() or not path.is_relative_to(root.resolve()):
    raise V.WSAEInputError(
      f"{where} = {name!r} points outside the store folder {root}; shard "
      f"files must live inside it (give names relative to the folder)."
    )
  return root / name


def _open_npy(path: pathlib.Path) -> np.ndarray:
  try:
    return np.load(path, mmap_mode="r")
  except (ValueError, OSError) as e:
    raise V.WSAEInputError(f"{path} is not a .npy array (nor a store folder): {e}") from None


def _select_shards(infos: list, shards) -> list:
  """The shards a store serves: all, or those `shards` (a slice or indices) names."""
  if shards is None:
    return infos
  idx = list(range(len(infos)))[shards] if isinstance(shards, slice) else list(shards)
  bad = [i for i in idx if not -len(infos) <= i < len(infos)]
  if bad or not idx:
    raise V.WSAEInputError(
      f"shards={shards!r} selects no shards or out-of-range ones (the store has {len(infos)})."
    )
  return [infos[i] for i in idx]


def _contexts(metadata: dict, context_len, drop_first_position) -> tuple[int | None, bool]:
  """`(context length or None, drop each context's first position?)` from the metadata and the
  caller's arguments (dropping defaults to on when the context length is known)."""
  ctx = metadata.get("context_len") or context_len
  if context_len is not None and metadata.get("context_len") not in (None, context_len):
    raise V.WSAEInputError(
      f"context_len={context_len} disagrees with the metadata's {metadata['context_len']}."
    )
  if drop_first_position is None:
    drop_first_position = ctx is not None
  if drop_first_position and ctx is None:
    raise V.WSAEInputError(
      "drop_first_position=True needs the context length: pass "
      "context_len= (or harvest with metadata that records it)."
    )
  return (int(ctx) if ctx else None), bool(drop_first_position)


class _ShardReader:
  """Reads row ranges of one shard, checked, as float32; releases the mapped pages afterwards."""

  def __init__(self, info: ShardInfo, d_in: int, dtype: str):
    self.info = info
    if not info.path.exists():
      raise V.WSAEInputError(f"shard {info.path} listed in the metadata does not exist.")
    if info.kind == "npy":
      self.arr = _open_npy(info.path)
      shape, got_dtype = self.arr.shape, str(self.arr.dtype)
    else:
      from safetensors import safe_open

      self._st = safe_open(str(info.path), framework="np")
      if "activations" not in self._st.keys():
        raise V.WSAEInputError(
          f"shard {info.path} has no tensor named 'activations' (it has {list(self._st.keys())})."
        )
      sl = self._st.get_slice("activations")
      shape = tuple(sl.get_shape())
      got_dtype = {"F16": "float16", "F32": "float32", "BF16": "bfloat16"}.get(
        sl.get_dtype(), sl.get_dtype()
      )
    if len(shape) != 2 or shape[1] != d_in:
      raise V.WSAEInputError(
        f"shard {info.path} has shape {tuple(shape)}; the metadata says "
        f"(*, {d_in}). Re-harvest it or fix metadata.json."
      )
    if shape[0] != info.n_tokens:
      raise V.WSAEInputError(
        f"shard {info.path} has {shape[0]} rows; the metadata says "
        f"{info.n_tokens}. The shard is truncated or the metadata is stale."
      )
    if got_dtype != dtype:
      raise V.WSAEInputError(
        f"shard {info.path} has dtype {got_dtype}; the metadata says {dtype}. "
        f"All shards of a store must share one dtype."
      )

  def read(self, start: int, stop: int) -> np.ndarray:
    if self.info.kind == "npy":
      rows = np.array(self.arr[start:stop], dtype=np.float32)
      self._release(start, stop)
    else:
      rows = np.asarray(self._st.get_slice("activations")[start:stop], np.float32)
    bad = ~np.isfinite(rows)
    if bad.any():
      r, c = (int(i) for i in np.argwhere(bad)[0])
      raise V.WSAEInputError(
        f"shard {self.info.path}: {int(bad.sum())} non-finite value(s) (NaN/inf) in rows "
        f"[{start}, {stop}); the first at row {start + r}, column {c}. Re-harvest that shard or "
        f"drop those rows."
      )
    return rows

  def _release(self, start: int, stop: int) -> None:
    """Drops the chunk's file pages from this process (they stay in the OS page cache)."""
    mm = getattr(self.arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
      return
    row_bytes = self.arr.strides[0]
    offset = getattr(self.arr, "offset", 0)  # a np.memmap's byte offset into its file
    lo = offset + start * row_bytes
    hi = offset + stop * row_bytes
    lo -= lo % mmap.PAGESIZE
    try:
      mm.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(mm)) - lo)
    except (OSError, ValueError):
      pass

  def tokens(self, start: int, stop: int) -> np.ndarray | None:
    if self.info.tokens_path is None:
      return None
    try:
      tokens = np.load(self.info.tokens_path, mmap_mode="r")
    except (OSError, ValueError) as e:  # e.g. a pickled object array (never loaded: unsafe)
      raise V.WSAEInputError(
        f"tokens file {self.info.tokens_path} is not a plain .npy array of "
        f"token ids ({e}); write it with np.save of an integer array."
      ) from None
    return np.asarray(tokens[start:stop])


class ActivationStore:
  """A shuffled, prefetched, device-sharded batch source over activation shards.

  Args:
    path: a store folder (or its metadata.json) or a bare ``(tokens, d_in)`` .npy file.
    batch_size: rows per batch.
    seed: shuffling seed; batch ``t`` depends only on ``(seed, t)``.
    buffer_tokens: rows shuffled together (memory: one float32 buffer, ``4 · d_in · buffer_tokens``
      bytes, plus the prefetched batches).
    chunk_tokens: rows read contiguously; the unit of the epoch-level shuffle. Rounded to whole
      contexts when the context length is known.
    normalize: multiply every row by ``scale = sqrt(d_in) / E‖x‖`` (estimated from up to
      ``scale_rows`` rows) so that the mean norm is ``sqrt(d_in)``; pass ``scale`` to the SAE
      export to fold it back.
    standardize: serve ``(x − mean) / std`` per input dimension (both estimated from up to
      ``scale_rows`` rows); ``standardization`` holds them for the SAE export to fold back.
      Exclusive with ``normalize``.
    max_norm_ratio: drop the rows whose norm exceeds this multiple of the median row norm (the
      few massive-activation tokens); ``dropped_rows`` counts them. Needs one pass over the
      store when it is opened. Default: keep every row.
    drop_first_position: drop position 0 of each context (the attention sink). Default: True
      when the metadata gives ``context_len``.
    context_len: tokens per context for a bare .npy file (enables ``drop_first_position``).
    shards: indices of the shards to use (e.g. a held-out split); default all.
    shuffle: False serves rows in file order (chunk order and buffers unshuffled).
    prefetch: batches prepared ahead by the background thread (0: none).
    validate: scan every shard for NaN/inf and mismatches now, before any training.
  """

  def __init__(
    self,
    path,
    batch_size: int,
    *,
    seed: int = 0,
    buffer_tokens: int = 2**16,
    chunk_tokens: int = 4096,
    normalize: bool = False,
    scale_rows: int = 2**16,
    drop_first_position: bool | None = None,
    context_len: int | None = None,
    shards=None,
    shuffle: bool = True,
    prefetch: int = 2,
    validate: bool = False,
    standardize: bool = False,
    max_norm_ratio: float | None = None,
  ):
    # Over 80 lines with its signature (15 options, each checked here, before any reading).
    V.check_int("batch_size", batch_size, low=1)
    V.check_int("buffer_tokens", buffer_tokens, low=1)
    V.check_int("chunk_tokens", chunk_tokens, low=1)
    V.check_int("prefetch", prefetch, low=0)
    if normalize and standardize:
      raise V.WSAEInputError(
        "normalize and standardize are exclusive: standardized rows already "
        "have E‖x‖² = d_in; choose one."
      )
    if max_norm_ratio is not None:
      V.check_range("max_norm_ratio", max_norm_ratio, low=1.0, low_open=True)
    self.path = pathlib.Path(path)
    self.metadata, infos = read_metadata(path)
    infos = _select_shards(infos, shards)
    self.d_in = int(self.metadata["d_in"])
    self.dtype = self.metadata["dtype"]
    self.batch_size = batch_size
    self.seed = int(seed)
    self.shuffle = shuffle
    self.context_len, self.drop_first_position = _contexts(
      self.metadata, context_len, drop_first_position
    )
    self._readers = [_ShardReader(i, self.d_in, self.dtype) for i in infos]
    if self.context_len:
      for r in self._readers:
        if r.info.n_tokens % self.context_len:
          raise V.WSAEInputError(
            f"shard {r.info.path} has {r.info.n_tokens} rows, not a multiple "
            f"of context_len={self.context_len}."
          )
      chunk_tokens = max(1, chunk_tokens // self.context_len) * self.context_len
    self.chunk_tokens = chunk_tokens
    # Chunk table: (reader index, start, stop, number of kept rows).
    chunks = []
    for ri, r in enumerate(self._readers):
      for start in range(0, r.info.n_tokens, chunk_tokens):
        stop = min(start + chunk_tokens, r.info.n_tokens)
        chunks.append((ri, start, stop, int(self._keep(start, stop).sum())))
    self._chunks = chunks
    self.n_tokens = sum(c[3] for c in chunks)
    self.max_norm_ratio = max_norm_ratio
    self.max_norm: float | None = None
    self.dropped_rows = 0
    if max_norm_ratio is not None:
      self._drop_massive_rows(max_norm_ratio, scale_rows)
    self.n_tokens = sum(c[3] for c in self._chunks)
    if self.n_tokens < batch_size:
      raise V.WSAEInputError(
        f"the store has {self.n_tokens} usable rows, fewer than "
        f"batch_size={batch_size}; lower batch_size or add data."
      )
    self.steps_per_epoch = self.n_tokens // batch_size
    self._chunks_per_buffer = max(1, buffer_tokens // chunk_tokens)
    self.buffer_tokens = self._chunks_per_buffer * chunk_tokens
    self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._buffers: dict[tuple[int, int], np.ndarray] = {}
    if validate and max_norm_ratio is None:  # dropping rows has read every chunk already
      self.validate()
    self.scale = self.estimate_scale(scale_rows) if normalize else None
    self.standardization = self.estimate_standardization(scale_rows) if standardize else None
    self._pool = concurrent.futures.ThreadPoolExecutor(1, "wsae-store") if prefetch else None
    self._pending: dict[int, concurrent.futures.Future] = {}
    self.prefetch = prefetch
    self._fingerprint: str | None = None

  def _drop_massive_rows(self, ratio: float, sample_rows: int) -> None:
    """Sets the norm bound from a sample's median and recounts every chunk without the rows above
    it (one pass over the store; also checks every chunk for NaN/inf)."""
    norms = np.linalg.norm(self.sample(sample_rows, seed=2).astype(np.float64), axis=1)
    self.max_norm = float(ratio * np.median(norms))
    before = sum(c[3] for c in self._chunks)
    self._chunks = [
      (ri, s, e, len(self._read_chunk(i))) for i, (ri, s, e, _) in enumerate(self._chunks)
    ]
    self.dropped_rows = before - sum(c[3] for c in self._chunks)

  # -- layout ---------------------------------------------------------------
  def _keep(self, start: int, stop: int) -> np.ndarray:
    keep = np.ones(stop - start, bool)
    if self.drop_first_position:
      keep[(np.arange(start, stop) % int(self.context_len or 1)) == 0] = False
    return keep

  def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk order of an epoch and the stream offset where each buffer (group) starts."""
    lay = self._layouts.get(epoch)
    if lay is None:
      n = len(self._chunks)
      order = (
        np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
      )
      sizes = np.array([self._chunks[c][3] for c in order])
      groups = [
        sizes[i : i + self._chunks_per_buffer].sum() for i in range(0, n, self._chunks_per_buffer)
      ]
      lay = (order, np.concatenate([[0], np.cumsum(groups)]))
      self._layouts = {epoch: lay}
    return lay

  def _buffer(self, epoch: int, group: int) -> np.ndarray:
    buf = self._buffers.get((epoch, group))
    if buf is None:
      # The stream only moves forward, so the previous buffer is done with: free it first.
      self._buffers.clear()
      order, bounds = self._layout(epoch)
      ids = order[group * self._chunks_per_buffer : (group + 1) * self._chunks_per_buffer]
      total = int(bounds[group + 1] - bounds[group])
      buf = np.empty((total, self.d_in), np.float32)
      # buf = concat(chunks)[perm], written chunk by chunk: row i of the concatenation goes to
      # position inv[i], so no second buffer-sized copy is made.
      inv = (
        np.argsort(np.random.default_rng([self.seed, epoch, group]).permutation(total))
        if self.shuffle
        else np.arange(total)
      )
      offset = 0
      for c in ids:
        rows = self._read_chunk(c)
        buf[inv[offset : offset + len(rows)]] = rows
        offset += len(rows)
      self._transform(buf)
      self._buffers[(epoch, group)] = buf
    return buf

  def _chunk_mask(self, c: int, rows: np.ndarray) -> np.ndarray | None:
    """Which rows of chunk `c` (as read) are served: not position 0 (when dropped), not above
    the norm bound (when set). None: all."""
    ri, start, stop, _ = self._chunks[c]
    keep = self._keep(start, stop) if self.drop_first_position else None
    if self.max_norm is not None:
      small = np.linalg.norm(rows, axis=1) <= self.max_norm
      keep = small if keep is None else keep & small
    return keep

  def _read_chunk(self, c: int, with_tokens: bool = False):
    ri, start, stop, _ = self._chunks[c]
    rows = self._readers[ri].read(start, stop)
    keep = self._chunk_mask(c, rows)
    if keep is not None:
      rows = rows[keep]
    if not with_tokens:
      return rows
    tok = self._readers[ri].tokens(start, stop)
    return rows, (tok if tok is None or keep is None else tok[keep])

  def _transform(self, rows: np.ndarray) -> np.ndarray:
    """Scales (``normalize``) or standardizes (``standardize``) rows in place."""
    if self.scale is not None:
      rows *= np.float32(self.scale)
    if self.standardization is not None:
      rows -= np.asarray(self.standardization["mean"], np.float32)
      rows /= np.asarray(self.standardization["std"], np.float32)
    return rows

  def stream(self, start: int, n: int) -> np.ndarray:
    """Rows ``[start, start + n)`` of the (infinite, epoch after epoch) shuffled stream."""
    out, filled = np.empty((n, self.d_in), np.float32), 0
    while filled < n:
      epoch, off = divmod(start + filled, self.n_tokens)
      _, bounds = self._layout(epoch)
      g = int(np.searchsorted(bounds, off, side="right") - 1)
      buf = self._buffer(epoch, g)
      lo = off - int(bounds[g])
      take = min(n - filled, len(buf) - lo)
      out[filled : filled + take] = buf[lo : lo + take]
      filled += take
    return out

  # -- batch source ---------------------------------------------------------
  def host_batch(self, step: int) -> np.ndarray:
    """Batch ``step`` as a float32 numpy array (normalised if ``normalize``)."""
    return self.stream(int(step) * self.batch_size, self.batch_size)

  def batch(self, step: int, sharding=None) -> jax.Array:
    step = int(step)
    if self._pool is None:
      host = self.host_batch(step)
    else:
      fut = self._pending.pop(step, None) or self._pool.submit(self.host_batch, step)
      for stale in [s for s in self._pending if s < step or s > step + self.prefetch]:
        self._pending.pop(stale).cancel()
      for ahead in range(step + 1, step + 1 + self.prefetch):
        if ahead not in self._pending:
          self._pending[ahead] = self._pool.submit(self.host_batch, ahead)
      host = fut.result()
    return data_lib.put_batch(lambda sl: host[sl], host.shape, sharding)

  def describe(self) -> dict:
    """What identifies the batch stream (compared when a run resumes)."""
    # The content's identity, not its path: a store may move between a crash and the resume.
    point = self.metadata.get("hook_point")  # absent: a block's output (resid_post)
    # Descriptive fields (for the SAELens metadata of an export), implied by the fingerprint.
    about = {k: self.metadata[k] for k in ("context_len", "corpus") if self.metadata.get(k)}
    return {
      "kind": "activations",
      "model": self.metadata.get("model"),
      "layer": self.metadata.get("layer"),
      **({"hook_point": point} if point else {}),
      **about,
      "seed": self.seed,
      "shuffle": self.shuffle,
      "rows": self.n_tokens,
      "d_in": self.d_in,
      "batch_size": self.batch_size,
      "buffer_tokens": self.buffer_tokens,
      "chunk_tokens": self.chunk_tokens,
      "drop_first_position": self.drop_first_position,
      "shards": self.shard_names,
      "fingerprint": self.fingerprint(),
      "scale": self.scale,
      **(
        {}
        if self.max_norm is None
        else {"max_norm_ratio": self.max_norm_ratio, "max_norm": self.max_norm}
      ),
      **({} if self.standardization is None else {"standardized": True}),
    }

  @property
  def shard_names(self) -> list[str]:
    """File names of the shards this store reads, in order."""
    return [str(r.info.path.name) for r in self._readers]

  def fingerprint(self) -> str:
    """A content fingerprint of the shards this store reads (see `file_fingerprint`); computed
    once, from a few MiB whatever the store's size."""
    if self._fingerprint is None:
      import hashlib

      h = hashlib.sha256()
      for r in self._readers:
        h.update(file_fingerprint(r.info.path).encode())
      self._fingerprint = h.hexdigest()[:32]
    return self._fingerprint

  def close(self) -> None:
    if self._pool is not None:
      for f in self._pending.values():
        f.cancel()
      self._pending.clear()
      self._pool.shutdown(wait=True)
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # -- whole-store passes ---------------------------------------------------
  def ordered(self, with_tokens: bool = False) -> Iterator:
    """Kept rows in file order, chunk by chunk (scaled if ``normalize``); with token ids."""
    for c in range(len(self._chunks)):
      rows, tok = self._read_chunk(c, with_tokens=True)
      self._transform(rows)
      yield (rows, tok) if with_tokens else rows

  def read_all(self, max_rows: int | None = None, with_tokens: bool = False):
    """The first ``max_rows`` kept rows in file order as one array (for evaluation sets)."""
    xs, ts, n = [], [], 0
    for item in self.ordered(with_tokens=True):
      rows, tok = item
      if max_rows is not None:
        rows, tok = rows[: max_rows - n], (None if tok is None else tok[: max_rows - n])
      xs.append(rows)
      ts.append(tok)
      n += len(rows)
      if max_rows is not None and n >= max_rows:
        break
    x = np.concatenate(xs)
    if not with_tokens:
      return x
    tokens = None if any(t is None for t in ts) else np.concatenate(ts)
    return x, tokens

  def validate(self) -> None:
    """Reads every chunk once: raises on NaN/inf naming the shard and rows."""
    for c in range(len(self._chunks)):
      self._read_chunk(c)

  def sample(self, n: int, *, seed: int = 0, served: bool = False) -> np.ndarray:
    """``n`` rows drawn from evenly spread chunks, e.g. to estimate γ: raw, or as the batches
    serve them (``served``: scaled or standardized)."""
    n = min(int(n), self.n_tokens)
    rng = np.random.default_rng([self.seed, seed, 7])
    per_chunk = max(1, math.ceil(n / len(self._chunks)))
    picks = []
    for c in rng.permutation(len(self._chunks)):
      rows = self._read_chunk(int(c))
      picks.append(rows[rng.permutation(len(rows))[:per_chunk]])
      if sum(len(p) for p in picks) >= n:
        break
    rows = np.concatenate(picks)[:n]
    return self._transform(rows) if served else rows

  def estimate_standardization(self, rows: int = 2**16) -> dict:
    """Per-dimension ``{"mean", "std"}`` (lists) over a sample of rows; a constant dimension is
    refused (it cannot be standardized)."""
    x = self.sample(rows, seed=1).astype(np.float64)
    std = x.std(0)
    flat = np.flatnonzero(~(std > 0))
    if flat.size:
      raise V.WSAEInputError(
        f"activations in {self.path}: dimension(s) {flat[:5].tolist()} are "
        f"constant over {len(x)} sampled rows; cannot standardize."
      )
    return {"mean": x.mean(0).tolist(), "std": std.tolist()}

  def estimate_scale(self, rows: int = 2**16) -> float:
    """``sqrt(d_in) / mean ‖x‖`` over a sample of rows."""
    x = self.sample(rows, seed=1).astype(np.float64)
    mean_norm = float(np.linalg.norm(x, axis=1).mean())
    if not mean_norm > 0:
      raise V.WSAEInputError(f"activations in {self.path} have zero mean norm; cannot normalise.")
    return math.sqrt(self.d_in) / mean_norm


class ActivationWriter:
  """Writes a store folder shard by shard; shards already on disk are kept (resumable).

  Each shard is written to a temporary name and renamed, so a killed harvest leaves only
  complete shards; ``metadata.json`` is rewritten after every shard.
  """

  def __init__(
    self, out_dir, *, d_in: int, dtype: str = "float16", context_len: int | None = None, **info
  ):
    if dtype not in _WRITE_DTYPES:
      raise V.WSAEInputError(f"dtype must be float16 or float32, got {dtype!r}.")
    self.dir = pathlib.Path(out_dir)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.d_in, self.dtype, self.context_len = int(d_in), dtype, context_len
    self.info = info
    self.shards: dict[int, dict] = {}
    meta_path = self.dir / META_NAME
    if meta_path.exists():
      old = json.loads(meta_path.read_text())
      if (
        old.get("d_in") != self.d_in
        or old.get("dtype") != dtype
        or old.get("context_len") != context_len
      ):
        raise V.WSAEInputError(
          f"{self.dir} already holds a store with d_in={old.get('d_in')}, dtype={old.get('dtype')}, "
          f"context_len={old.get('context_len')}; write to a new folder."
        )
      # Resuming must not mix activations of another model, layer or corpus into the store.
      differ = [
        k
        for k in _IDENTITY
        if k in old and k in info and _identity(k, old[k]) != _identity(k, info[k])
      ]
      if differ:
        raise V.WSAEInputError(
          f"{self.dir} already holds a store of another harvest ("
          + ", ".join(f"{k}: {old[k]!r} there, {info[k]!r} now" for k in differ)
          + "); resuming would mix them. Write to a new folder."
        )
      for s in old.get("shards", []):
        index = int(s["file"].split("_")[-1].split(".")[0])
        if (self.dir / s["file"]).exists():
          self.shards[index] = s

  @staticmethod
  def shard_name(index: int) -> str:
    return f"acts_{index:05d}.npy"

  def has_shard(self, index: int) -> bool:
    return index in self.shards

  def write_shard(self, index: int, acts, tokens=None) -> None:
    acts = np.asarray(acts)
    if acts.ndim != 2 or acts.shape[1] != self.d_in:
      raise V.WSAEInputError(
        f"shard {index}: activations have shape {acts.shape}, expected (tokens, {self.d_in})."
      )
    V.check_finite(f"shard {index} activations", acts)
    entry: dict = {"file": self.shard_name(index), "n_tokens": int(acts.shape[0])}
    records.save_npy(self.dir / entry["file"], acts.astype(self.dtype))
    if tokens is not None:
      tokens = np.asarray(tokens, np.int32).reshape(-1)
      if tokens.shape[0] != acts.shape[0]:
        raise V.WSAEInputError(
          f"shard {index}: {tokens.shape[0]} token ids for {acts.shape[0]} activation rows."
        )
      entry["tokens_file"] = f"tokens_{index:05d}.npy"
      records.save_npy(self.dir / entry["tokens_file"], tokens)
    self.shards[index] = entry
    self.finish()

  def finish(self, **extra) -> dict:
    self.info.update(extra)
    shards = [self.shards[i] for i in sorted(self.shards)]
    meta = {
      "format": FORMAT,
      **self.info,
      "d_in": self.d_in,
      "dtype": self.dtype,
      "context_len": self.context_len,
      "n_tokens": sum(s["n_tokens"] for s in shards),
      "shards": shards,
    }
    records.write_json(self.dir / META_NAME, meta, indent=1)
    return meta


_IDENTITY = ("model", "layer", "hook", "corpus", "context_seed", "prefix_token_id")
"""Metadata fields of a harvest that a resumed write must share with the store it extends."""


def _identity(key: str, value):
  # A model recorded by base name (older stores) and by path name the same model.
  return pathlib.Path(str(value)).name if key == "model" and value else value


def file_fingerprint(path, *, blocks: int = 16, block_bytes: int = 2**16) -> str:
  """sha256 of a file's size and `blocks` evenly spaced blocks of `block_bytes` (the whole file
  when it is smaller than that): a content identity that reads at most 1 MiB per file, so
  resuming onto another file of the same shape is caught on a multi-GB store."""
  import hashlib

  path = pathlib.Path(path)
  size = path.stat().st_size
  h = hashlib.sha256(str(size).encode())
  with open(path, "rb") as f:
    if size <= blocks * block_bytes:
      h.update(f.read())
    else:
      for offset in np.linspace(0, size - block_bytes, num=blocks).astype(np.int64):
        f.seek(int(offset))
        h.update(f.read(block_bytes))
  return h.hexdigest()[:32]

"""Read objects out of an R lazy-load database (``*.rdb`` + ``*.rdx``), stdlib only.

R packages store their datasets (``data/Rdata.rdb``) and code as a database of
serialized R objects: the index (``.rdx``) is one serialized, compressed list
``list(variables = <name -> c(offset, length)>, references = ..., compressed = ...)``
and each record in ``.rdb`` is a compressed serialization of one object. The
serialization is R's XDR format (``serialize(x, NULL, xdr = TRUE)``, versions 2
and 3). This reader handles the part of it that datasets use: ``NULL``,
logical/integer/double/complex/character/raw vectors, lists, pairlists,
symbols, attributes, environments and references, and the ``compact_intseq``
ALTREP class R uses for row names. Anything else (closures, bytecode) raises
:class:`RDataError` naming the type.

It exists so that the harvest experiment can read the novels shipped by the
Debian package ``r-cran-janeaustenr`` without R::

  texts = read_lazyload("/usr/lib/R/site-library/janeaustenr/data/Rdata")
  emma_lines = texts["emma"]            # list[str], one entry per line
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["RDataError", "RObject", "unserialize", "read_rds", "read_lazyload", "lazyload_names"]

# SEXP type codes (R internals, serialize.c).
_NILSXP, _SYMSXP, _LISTSXP, _CLOSXP, _ENVSXP, _PROMSXP, _LANGSXP = 0, 1, 2, 3, 4, 5, 6
_CHARSXP, _LGLSXP, _INTSXP, _REALSXP, _CPLXSXP, _STRSXP = 9, 10, 13, 14, 15, 16
_VECSXP, _EXPRSXP, _RAWSXP, _S4SXP = 19, 20, 24, 25
_REFSXP, _NILVALUE, _GLOBALENV, _UNBOUNDVALUE, _MISSINGARG = 255, 254, 253, 252, 251
_BASENAMESPACE, _NAMESPACESXP, _PACKAGESXP, _PERSISTSXP = 250, 249, 248, 247
_EMPTYENV, _BASEENV, _ATTRLANGSXP, _ATTRLISTSXP, _ALTREP = 242, 241, 240, 239, 238

_NA_INTEGER = -(2**31)
MAX_DEPTH = 200  # nesting levels of R objects read before giving up (see `_Reader.item`)
_TYPE_NAMES = {
  3: "closure",
  5: "promise",
  7: "special",
  8: "builtin",
  17: "dots",
  21: "bytecode",
  22: "external pointer",
  23: "weak reference",
  25: "S4 object",
}


class RDataError(ValueError):
  """The bytes are not an R serialization this reader understands."""


@dataclass
class RObject:
  """An R value with attributes: ``value`` is the Python form, ``attributes`` a dict."""

  value: Any
  attributes: dict = field(default_factory=dict)
  rtype: str = ""


class _Reader:
  def __init__(self, data: bytes, source: str):
    self.data = data
    self.pos = 0
    self.source = source
    self.refs: list[Any] = []
    self.depth = 0

  def _fail(self, msg: str) -> RDataError:
    return RDataError(f"{self.source}: {msg} (at byte {self.pos})")

  def take(self, n: int) -> bytes:
    if self.pos + n > len(self.data):
      raise self._fail(f"truncated: wanted {n} bytes, {len(self.data) - self.pos} left")
    out = self.data[self.pos : self.pos + n]
    self.pos += n
    return out

  def int32(self) -> int:
    return struct.unpack(">i", self.take(4))[0]

  def length(self) -> int:
    n = self.int32()
    if n == -1:  # long vector: two more ints, upper then lower 32 bits
      hi, lo = struct.unpack(">II", self.take(8))
      n = (hi << 32) + lo
    return n

  def header(self) -> None:
    fmt = self.take(2)
    if fmt != b"X\n":
      raise self._fail(
        f"format {fmt!r} is not XDR ('X\\n'); ascii/native serializations are not supported"
      )
    version = self.int32()
    self.int32()  # writer R version
    self.int32()  # minimal reader version
    if version == 3:
      self.take(self.int32())  # native encoding name
    elif version != 2:
      raise self._fail(f"serialization version {version} (supported: 2, 3)")

  # -- items --------------------------------------------------------------
  def item(self) -> Any:
    """The next R object. Nesting deeper than `MAX_DEPTH` is refused with `RDataError` (a real
    corpus nests a few levels; a crafted or damaged file must not exhaust Python's stack)."""
    if self.depth >= MAX_DEPTH:
      raise self._fail(
        f"objects nested more than {MAX_DEPTH} levels deep; the file is damaged "
        f"or not a data object"
      )
    self.depth += 1
    try:
      return self._item()
    finally:
      self.depth -= 1

  def _item(self) -> Any:
    # Over 80 lines on purpose: one case per R serialisation type (R's own `ReadItem` is one
    # switch as well); split up, the cases would be harder to check against R's sources.
    value: Any
    flags = self.int32()
    kind = flags & 0xFF
    has_attr = bool(flags & (1 << 9))
    levels = flags >> 12

    if kind == _NILVALUE:
      return None
    if kind in (_EMPTYENV, _BASEENV, _GLOBALENV, _BASENAMESPACE):
      return RObject({}, rtype="environment")
    if kind in (_UNBOUNDVALUE, _MISSINGARG):
      return None
    if kind == _REFSXP:
      index = flags >> 8
      if index == 0:
        index = self.int32()
      if not 1 <= index <= len(self.refs):
        raise self._fail(f"reference {index} out of range ({len(self.refs)} known)")
      return self.refs[index - 1]
    if kind == _PERSISTSXP:
      names = self.item()
      obj = RObject(names, rtype="persistent")
      self.refs.append(obj)
      return obj
    if kind == _SYMSXP:
      name = self.item()
      self.refs.append(name)
      return name
    if kind in (_PACKAGESXP, _NAMESPACESXP):
      self._string_vector_body()  # namespace info, a STRSXP without its flags
      obj = RObject({}, rtype="namespace")
      self.refs.append(obj)
      return obj
    if kind == _ENVSXP:
      self.int32()  # locked
      env = RObject({}, rtype="environment")
      self.refs.append(env)
      self.item()  # enclosing environment
      frame = self.item()
      hashtab = self.item()
      attrs = self.item()
      for source in (frame, hashtab):
        env.value.update(_pairlist_dict(source))
      if isinstance(attrs, RObject):
        env.attributes = _pairlist_dict(attrs)
      return env
    if kind in (_LISTSXP, _LANGSXP, _ATTRLANGSXP, _ATTRLISTSXP):
      return self._pairlist(flags)
    if kind == _CHARSXP:
      n = self.int32()
      if n == -1:
        return None  # NA_character_
      raw = self.take(n)
      encoding = "latin-1" if levels & (1 << 2) else "utf-8"
      return raw.decode(encoding, errors="replace")
    if kind == _ALTREP:
      return self._altrep()

    if kind == _LGLSXP or kind == _INTSXP:
      n = self.length()
      vals = list(struct.unpack(f">{n}i", self.take(4 * n)))
      vals = [None if v == _NA_INTEGER else (bool(v) if kind == _LGLSXP else v) for v in vals]
      value, rtype = vals, "logical" if kind == _LGLSXP else "integer"
    elif kind == _REALSXP:
      n = self.length()
      value, rtype = list(struct.unpack(f">{n}d", self.take(8 * n))), "double"
    elif kind == _CPLXSXP:
      n = self.length()
      parts = struct.unpack(f">{2 * n}d", self.take(16 * n))
      value, rtype = [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)], "complex"
    elif kind == _STRSXP:
      value, rtype = self._string_vector_body(), "character"
    elif kind in (_VECSXP, _EXPRSXP):
      n = self.length()
      value, rtype = [self.item() for _ in range(n)], "list"
    elif kind == _RAWSXP:
      n = self.length()
      value, rtype = self.take(n), "raw"
    elif kind == _S4SXP:
      value, rtype = None, "S4"
    else:
      raise self._fail(
        f"unsupported R type {_TYPE_NAMES.get(kind, kind)} (SEXP type {kind}); "
        "only data objects (vectors, lists, environments) can be read"
      )
    attrs = _pairlist_dict(self.item()) if has_attr else {}
    return RObject(value, attrs, rtype) if (attrs or rtype in ("list",)) else value

  def _string_vector_body(self) -> list:
    n = self.length()
    return [self.item() for _ in range(n)]

  def _pairlist(self, flags: int) -> RObject:
    """A pairlist as an ordered list of (tag, value); read iteratively (long lists)."""
    entries = []
    attrs: dict = {}
    kind = flags & 0xFF
    while True:
      has_attr = bool(flags & (1 << 9))
      has_tag = bool(flags & (1 << 10))
      if has_attr:
        a = self.item()
        if not attrs:
          attrs = _pairlist_dict(a)
      tag = self.item() if has_tag else None
      car = self.item()
      entries.append((tag, car))
      flags = self.int32()
      kind = flags & 0xFF
      if kind not in (_LISTSXP, _LANGSXP, _ATTRLANGSXP, _ATTRLISTSXP):
        self.pos -= 4
        tail = self.item()
        if tail is not None:
          entries.append((None, tail))
        break
    return RObject(entries, attrs, "pairlist")

  def _altrep(self) -> Any:
    info = self.item()
    state = self.item()
    attrs = self.item()
    cls = info.value[0][1] if isinstance(info, RObject) and info.value else None
    if cls == "compact_intseq":
      n, start, step = (int(v) for v in state)
      value = list(range(start, start + n * step, step))
    elif cls == "compact_realseq":
      n, start, step = state
      value = [start + i * step for i in range(int(n))]
    elif cls in (
      "wrap_integer",
      "wrap_real",
      "wrap_string",
      "wrap_logical",
      "wrap_list",
      "deferred_string",
    ):
      inner = (
        state.value[0][1] if isinstance(state, RObject) and state.rtype == "pairlist" else state
      )
      value = inner.value if isinstance(inner, RObject) else inner
    else:
      raise self._fail(f"unsupported ALTREP class {cls!r}")
    a = _pairlist_dict(attrs)
    return RObject(value, a, "altrep") if a else value


def _pairlist_dict(obj: Any) -> dict:
  if isinstance(obj, RObject) and obj.rtype == "pairlist":
    return {tag: value for tag, value in obj.value if tag is not None}
  return {}


def _decompress_record(blob: bytes, compressed: int, source: str) -> bytes:
  """One lazy-load record: 4-byte big-endian raw length, then the compressed bytes."""
  if len(blob) < 5:
    raise RDataError(f"{source}: record of {len(blob)} bytes is too short")
  (n,) = struct.unpack(">I", blob[:4])
  body = blob[4:]
  try:
    if compressed in (0, False):
      out = body
    elif compressed in (1, True):
      out = zlib.decompress(body)
    else:  # compress = 2 (bzip2) or 3 (xz): a type byte precedes the stream
      kind, body = body[:1], body[1:]
      codecs: dict[bytes, Callable[[bytes], bytes]] = {
        b"Z": zlib.decompress,
        b"2": bz2.decompress,
        b"X": lzma.decompress,
        b"0": lambda b: b,
      }
      out = codecs[kind](body)
  except (zlib.error, OSError, lzma.LZMAError, KeyError) as exc:
    raise RDataError(f"{source}: cannot decompress record ({exc})") from exc
  if len(out) != n:
    raise RDataError(f"{source}: record says {n} bytes, decompressed to {len(out)}")
  return out


def unserialize(data: bytes, source: str = "<bytes>") -> Any:
  """Unserialize one R XDR serialization (what ``serialize(x, NULL)`` writes)."""
  reader = _Reader(data, source)
  reader.header()
  return reader.item()


def read_rds(path: str | os.PathLike) -> Any:
  """Read an ``.rds`` file (gzip, bzip2, xz or uncompressed)."""
  raw = open(path, "rb").read()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  elif raw[:3] == b"BZh":
    raw = bz2.decompress(raw)
  elif raw[:6] == b"\xfd7zXZ\x00":
    raw = lzma.decompress(raw)
  return unserialize(raw, str(path))


def _index(base: str) -> tuple[dict, int]:
  rdx = base + ".rdx"
  if not os.path.exists(rdx) or not os.path.exists(base + ".rdb"):
    raise FileNotFoundError(
      f"lazy-load database {base}.rdb/.rdx not found; pass the path "
      "without extension, e.g. .../janeaustenr/data/Rdata"
    )
  raw = open(rdx, "rb").read()
  index = (
    read_rds(rdx) if raw[:2] == b"\x1f\x8b" else unserialize(_decompress_record(raw, 1, rdx), rdx)
  )
  fields = _named_list(index)
  variables = _named_list(fields["variables"])
  compressed = fields.get("compressed", [True])
  compressed = compressed[0] if isinstance(compressed, list) else compressed
  return variables, int(compressed)


def _named_list(obj: Any) -> dict:
  if not (isinstance(obj, RObject) and obj.rtype == "list" and "names" in obj.attributes):
    raise RDataError(f"expected a named list, got {type(obj).__name__}")
  return dict(zip(obj.attributes["names"], obj.value))


def lazyload_names(base: str | os.PathLike) -> list[str]:
  """Names of the objects in a lazy-load database (path without ``.rdb``/``.rdx``)."""
  variables, _ = _index(os.fspath(base))
  return list(variables)


def read_lazyload(base: str | os.PathLike, names: list[str] | None = None) -> dict[str, Any]:
  """Read objects (all, or ``names``) from the lazy-load database at ``base``."""
  base = os.fspath(base)
  variables, compressed = _index(base)
  wanted = list(variables) if names is None else names
  missing = [n for n in wanted if n not in variables]
  if missing:
    raise KeyError(f"{base}.rdb has no objects {missing}; it has {sorted(variables)}")
  out = {}
  with open(base + ".rdb", "rb") as f:
    for name in wanted:
      offset, length = (int(v) for v in variables[name])
      f.seek(offset)
      blob = f.read(length)
      out[name] = unserialize(
        _decompress_record(blob, compressed, f"{base}.rdb[{name}]"), f"{base}.rdb[{name}]"
      )
  return out

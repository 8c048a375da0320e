"""The R lazy-load reader against bytes R itself wrote (tests/fixtures/make_rdata_fixture.py)."""

import gzip
import pathlib
import struct

import pytest

from wsae_jax.lm import harvest, rdata

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "janeaustenr_mini"
BASE = FIXTURE / "data" / "Rdata"


def test_names_and_known_text():
  assert rdata.lazyload_names(BASE) == [
    "emma",
    "mansfieldpark",
    "northangerabbey",
    "persuasion",
    "prideprejudice",
    "sensesensibility",
  ]
  books = rdata.read_lazyload(BASE)
  assert all(len(v) == 40 for v in books.values())
  pp = books["prideprejudice"]
  assert pp[0] == "PRIDE AND PREJUDICE"
  assert pp[9] == "It is a truth universally acknowledged, that a single man in possession"
  assert pp[10] == "of a good fortune, must be in want of a wife."
  assert books["emma"][:3] == ["EMMA", "", "By Jane Austen"]


def test_subset_and_missing_name():
  assert list(rdata.read_lazyload(BASE, ["persuasion"])) == ["persuasion"]
  with pytest.raises(KeyError, match="no objects \\['mobydick'\\]"):
    rdata.read_lazyload(BASE, ["mobydick"])


def test_janeausten_texts_from_unpacked_package():
  texts = harvest.janeausten_texts(FIXTURE)
  assert list(texts) == list(harvest.JANEAUSTEN_BOOKS)
  assert "It is a truth universally acknowledged" in texts["prideprejudice"]
  corpus = harvest.read_corpus("janeaustenr", janeausten_root=FIXTURE)
  assert corpus.startswith("SENSE AND SENSIBILITY")


def _xdr(*items: bytes) -> bytes:
  return b"X\n" + struct.pack(">iii", 2, 0x040201, 0x020300) + b"".join(items)


def test_vectors_na_and_attributes():
  # c(a = 1L, b = NA) as R serializes it: INTSXP with attributes (flag bit 9), then names.
  ints = struct.pack(">iiii", 13 | (1 << 9), 2, 1, -(2**31))
  names = (
    struct.pack(">i", 2 | (1 << 10))
    + struct.pack(">i", 1)
    + struct.pack(">ii", 9, 5)
    + b"names"
    + struct.pack(">ii", 16, 2)
    + struct.pack(">ii", 9 | (1 << 18), 1)
    + b"a"
    + struct.pack(">ii", 9, -1)
    + struct.pack(">i", 254)
  )
  obj = rdata.unserialize(_xdr(ints + names))
  assert obj.value == [1, None] and obj.attributes == {"names": ["a", None]}
  reals = rdata.unserialize(_xdr(struct.pack(">ii", 14, 2) + struct.pack(">dd", 0.5, -2.0)))
  assert reals == [0.5, -2.0]


def test_errors_name_the_problem():
  with pytest.raises(rdata.RDataError, match="not XDR"):
    rdata.unserialize(b"A\n" + b"\0" * 12)
  with pytest.raises(rdata.RDataError, match="closure"):
    rdata.unserialize(_xdr(struct.pack(">i", 3)))
  with pytest.raises(rdata.RDataError, match="truncated"):
    rdata.unserialize(_xdr(struct.pack(">ii", 13, 5) + b"\0\0\0\1"))
  with pytest.raises(FileNotFoundError, match="without extension"):
    rdata.read_lazyload(FIXTURE / "nothing")


def test_corrupt_record(tmp_path):
  rdx = (BASE.with_suffix(".rdx")).read_bytes()
  (tmp_path / "Rdata.rdx").write_bytes(rdx)
  (tmp_path / "Rdata.rdb").write_bytes(b"\0" * 8000)
  with pytest.raises(rdata.RDataError, match="cannot decompress"):
    rdata.read_lazyload(tmp_path / "Rdata", ["emma"])
  assert gzip.decompress(rdx)[:2] == b"X\n"  # the fixture index is R's gzip'd XDR

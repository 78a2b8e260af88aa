"""Malformed streams are refused with a StreamError, never another exception (docs/reliability.md,
"Decoder limits and fuzzing").

Mutations of the golden streams (bit flips, truncations, insertions, header fields), most of them
re-sealed with a fresh CRC so that they reach the payload parsers; the property is
:func:`fuzz_decode.check` (tests/fuzz/fuzz_decode.py, which atheris also runs). The decoder's
limit is lowered to FUZZ_LIMIT values so that each input decodes in milliseconds.
"""

import itertools
import math
import os
import struct
import subprocess
import sys
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xr_inr
from xr_inr import StreamError, decode_block
from xr_inr.core import stream
from xr_inr.core.decode import LayoutError, check_layout
from xr_inr.methods.grid import payload as grid_payload
from xr_inr.methods.grid.payload import GridStreamError
from xr_inr.methods.siren import payload as siren_payload
from xr_inr.methods.siren.model import SirenSpec

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
from fuzz_decode import FUZZ_LIMIT, GOLDEN, check, resealed  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STREAMS = {path.stem: path.read_bytes() for path in sorted(GOLDEN.glob("*.xinr"))}
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def fuzz_limit(monkeypatch):
    monkeypatch.setattr(stream, "MAX_BLOCK_VALUES", FUZZ_LIMIT)


@st.composite
def mutated(draw) -> bytes:
    """A golden stream with one to three mutations, re-sealed 9 times in 10."""
    data = bytearray(draw(st.sampled_from(sorted(STREAMS.values()))))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "field"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "field":  # a header field: method, dtype, band axis, flags (u8) or a shape's u32
            offset, fmt = draw(st.sampled_from([(5, "<B"), (6, "<B"), (7, "<B"), (8, "<B"), (9, "<I"),
                                                (13, "<I"), (17, "<I"), (21, "<I"), (25, "<I")]))
            value = draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1))
            if offset + struct.calcsize(fmt) <= len(data):
                struct.pack_into(fmt, data, offset, value)
    return resealed(bytes(data)) if draw(st.integers(0, 9)) else bytes(data)


@FUZZ
@given(mutated())
def test_a_mutated_stream_decodes_to_its_declared_layout_or_raises_stream_error(fuzz_limit, data):
    check(data)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_golden_streams_decode_alike_whatever_numpys_error_state(name):
    if name.startswith("v1_grid"):
        pytest.skip("refused (tests/test_golden.py)")
    expected = decode_block(STREAMS[name])
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(decode_block(STREAMS[name]), expected)


def header_with(data: bytes, **fields) -> bytes:
    """A golden stream with header fields replaced, re-sealed."""
    offsets = {"shape": (9, "<3I"), "padded": (21, "<3I")}
    body = bytearray(data[: -stream.CRC_BYTES])
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, body, offset, *np.atleast_1d(value))
    return stream.seal(bytes(body))


@pytest.mark.parametrize(("name", "fields", "message"), [
    ("constant_uint16", {"shape": (2**16, 2**16, 1)}, "more than the decoder's limit"),
    ("grid_edge_padded", {"padded": (2**20, 2**20, 2**20)}, "more than the decoder's limit"),
    ("raw_uint16", {"shape": (2**10, 2**10, 2**9)}, "more than the decoder's limit"),
    ("grid_float32", {"shape": (2, 24, 20)}, "3 basis vectors for 2 bands"),
    ("grid_float32", {"shape": (3, 2**13, 2**12)}, "pixels, more than"),
    ("grid_float32", {"shape": (2**28, 1, 1)}, "parameters, more than"),
])
def test_declared_sizes_are_checked_before_anything_is_allocated(name, fields, message):
    with pytest.raises(StreamError, match=message):
        decode_block(header_with(STREAMS[name], **fields))


def test_a_grid_model_with_more_latents_than_the_limit_is_refused(fuzz_limit):
    with pytest.raises(StreamError, match="latents, more than"):  # 4 x 128 x 128 values, 71,680 latents
        decode_block(header_with(STREAMS["grid_uint16"], shape=(4, 128, 128)))


def test_a_grid_model_one_multiply_add_over_the_work_limit_is_refused_before_decoding(monkeypatch):
    data = STREAMS["grid_uint16"]
    reader = stream.Reader(data)
    work = grid_payload.decode_work(grid_payload.describe(reader.payload(), reader.header.block_shape, reader.header.version)["spec"])
    values = math.prod(reader.header.block_shape)
    monkeypatch.setattr(stream, "MAX_WORK_PER_VALUE", Fraction(work - 1, values))  # a limit of work - 1
    monkeypatch.setattr(grid_payload.entropy, "new_decoder", lambda *_: pytest.fail("decoding began"))
    with pytest.raises(GridStreamError, match=f"declares {work} multiply-adds .* limit of {work - 1} "):
        decode_block(data)
    monkeypatch.undo()
    monkeypatch.setattr(stream, "MAX_WORK_PER_VALUE", Fraction(work, values))
    decode_block(data)


def test_a_siren_one_unit_wider_than_the_work_limit_is_refused():
    """The golden SIREN (depth 2, 20 bands) declared as wide as the limit allows, then one unit wider."""
    widest = next(w for w in itertools.count(1) if siren_payload.over_work_limit(SirenSpec(2, w, 20))) - 1
    for width, message in ((widest, "ends before its payload"), (widest + 1, "multiply-adds of decoding, more than")):
        body = bytearray(STREAMS["siren_uint16"][: -stream.CRC_BYTES])
        struct.pack_into("<H", body, stream.HEADER_BYTES + 1, width)
        with pytest.raises(StreamError, match=message):
            decode_block(stream.seal(bytes(body)))


def test_every_architecture_the_grid_encoder_chooses_needs_under_a_quarter_of_the_work_limit():
    """Few bands need the most per value (components <= bands); tiny blocks get small models."""
    most = 0.0
    for bands in (1, 2, 3, 5, 8, 20, 198, 255):
        for h, w in ((1, 1), (2, 3), (7, 300), (1, 4096), (24, 20), (100, 100), (512, 512)):
            for bpppb in (0.001, 0.02, 0.1, 0.5, 2, 8, 64):
                for components in (None, 1, 4, 20, 255):
                    spec = grid_payload.choose_spec(bands, h, w, bpppb * bands * h * w, components)
                    most = max(most, grid_payload.decode_work(spec) / (bands * h * w))
    assert most <= stream.MAX_WORK_PER_VALUE / 4, most  # measured 2,981: one band, 1 x 4096, 8 bpppb


def test_the_siren_encoder_refuses_a_block_its_decoder_would_refuse():
    cube = np.random.default_rng(0).random((3, 8, 8))
    with pytest.raises(ValueError, match="multiply-adds per value to decode.*smaller chunks"):
        xr_inr.INRCodec(bpppb=1, method="siren", depth=2, width=400).encode(cube)
    big = np.random.default_rng(0).random((1, 512, 512)).astype(np.float32)
    with pytest.raises(ValueError, match="smaller chunks"):  # sized by its budget
        xr_inr.INRCodec(bpppb=1, method="siren").encode(big)
    codec = xr_inr.INRCodec(bpppb=1.5, method="siren")  # 198 bands: up to 1.7 bpppb on 512 x 512 pixels
    assert not any(map(siren_payload.over_work_limit, siren_payload.candidates(codec, 198, 3 * 99 * 512**2, 0)))


def test_a_mask_that_inflates_beyond_its_block_is_refused():
    import zlib

    body = bytearray(STREAMS["grid_nan"][: -stream.CRC_BYTES])
    (length,) = struct.unpack_from("<I", body, 22)
    bomb = zlib.compress(bytes(2**24), 9)  # 16 MiB of zeros, the block needs 1,200 bytes
    body[26 : 26 + length] = bomb
    struct.pack_into("<I", body, 22, len(bomb))
    with pytest.raises(StreamError, match="NaN mask does not inflate"):
        decode_block(stream.seal(bytes(body)))


def test_check_layout_refuses_any_other_shape_or_dtype():
    data = STREAMS["grid_uint16"]
    check_layout(data, (20, 24, 20), np.uint16)
    for shape, dtype in (((20, 20, 24), np.uint16), ((20, 24, 20), np.int16), ((20, 24, 21), np.uint16)):
        with pytest.raises(LayoutError):
            check_layout(data, shape, dtype)


@settings(max_examples=15, deadline=timedelta(seconds=10), derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated(), index=st.sampled_from([(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]))
def test_a_damaged_chunk_read_through_open_zarr_raises_chunk_error_naming_it(fuzz_limit, tmp_path_factory, data,
                                                                            index):
    """A store written by Zarr itself (no manifest: the stream's own checks), every chunk the golden
    grid_uint16 stream but one."""
    import shutil

    import zarr

    path = tmp_path_factory.mktemp("damaged") / "store.zarr"
    zarr.open_group(path, mode="w").create_array("r", shape=(20, 48, 40), chunks=(20, 24, 20), dtype="uint16",
                      serializer=xr_inr.INRZarrCodec(band_axis=0), compressors=None, fill_value=0,
                      dimension_names=("band", "y", "x"))
    for chunk in ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)):
        target = path / "r" / "c" / Path(*map(str, chunk))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if chunk == index else STREAMS["grid_uint16"])
    try:
        values = xr_inr.open_zarr(path, consolidated=False)["r"].values
    except xr_inr.ChunkError as err:
        assert f"chunk {index}" in str(err)
    else:  # a mutation that is still a valid stream of this chunk's shape and dtype
        assert values.shape == (20, 48, 40) and values.dtype == np.uint16
    shutil.rmtree(path)


def test_the_atheris_target_runs_clean(tmp_path):
    pytest.importorskip("atheris")
    target = Path(__file__).parent / "fuzz" / "fuzz_decode.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(target), "-runs=2000", "-timeout=20", "-rss_limit_mb=2048",
                             "-seed=1"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2000 inputs" in result.stderr

"""Padded streams (HAS_FILL): edge chunks fitted on their valid region, nodata masked; both methods."""

import numpy as np
import pytest

from xr_inr import INRCodec, StreamError, decode_block, inspect
from xr_inr.core import stream as bs
from xr_inr.core.decode import decode_counter
from xr_inr.core.encode import valid_extent

METHODS = {"grid": dict(steps=30), "siren": dict(method="siren", steps=60, search_steps=0, lr=3e-3, depth=2)}


@pytest.fixture(params=METHODS)
def fast(request):
    """A few fitting steps of each method (the default, grid, first)."""
    return METHODS[request.param]


def smooth_cube(bands=8, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    patterns = np.stack([np.sin(3 * yy), np.cos(2 * xx), yy * xx])
    return np.einsum("bk,kyx->byx", rng.uniform(0.2, 1.0, size=(bands, 3)), patterns)


def as_uint16(cube):
    return (1000 + 3000 * (cube - cube.min()) / np.ptp(cube)).astype(np.uint16)


def test_padded_stream_decodes_to_the_chunk_with_the_padding_filled(fast):
    valid = as_uint16(smooth_cube(h=13, w=9))
    codec = INRCodec(bpppb=4.0, **fast)
    buf = codec.encode_block(valid, padded_shape=(8, 16, 16), fill_value=7)
    decoded = codec.decode(buf)
    assert decoded.shape == (8, 16, 16) and decoded.dtype == np.uint16
    assert (decoded[:, 13:] == 7).all() and (decoded[:, :, 9:] == 7).all()
    # the fit saw values 1000..4000 only: no pull towards the fill value at the valid region's edge
    assert decoded[:, :13, :9].min() > 500
    assert np.abs(decoded[:, :13, :9].astype(float) - valid).mean() < 150
    info = inspect(buf)
    assert info["shape"] == (8, 16, 16) and info["valid_shape"] == (8, 13, 9) and info["fill_value"] == 7
    # the rate counts the valid elements only, and stays within budget
    assert info["bpppb"] == pytest.approx(8 * len(buf) / valid.size) and info["bpppb"] <= 4.0


def test_padding_along_the_band_axis_and_nan_fill(fast):
    valid = smooth_cube(bands=5, h=12, w=12).astype(np.float32)
    buf = INRCodec(bpppb=8.0, **fast).encode_block(valid, padded_shape=(8, 12, 12), fill_value=np.nan)
    decoded = decode_block(buf)
    assert decoded.shape == (8, 12, 12)
    assert np.isnan(decoded[5:]).all() and not np.isnan(decoded[:5]).any()


def test_sampling_a_padded_stream(fast):
    valid = as_uint16(smooth_cube(h=10, w=10))
    buf = INRCodec(bpppb=4.0, **fast).encode_block(valid, padded_shape=(8, 16, 16), fill_value=0)
    full = decode_block(buf)
    sub = decode_block(buf, ys=np.array([0.0, 3.0, 9.0, 12.0]), xs=np.array([2.0, 15.0]))
    np.testing.assert_array_equal(sub[:, :3, 0], full[:, [0, 3, 9], 2])  # network at the same pixels
    assert (sub[:, 3] == 0).all() and (sub[:, :, 1] == 0).all()  # padding positions: the fill value


def test_nodata_elements_are_left_out_and_restored_exactly(fast):
    cube = as_uint16(smooth_cube())
    cube[:, 3:7, 2:5] = 0  # nodata pixels
    cube[2, 10, 10] = 0  # and one element
    codec = INRCodec(bpppb=4.0, **fast)
    decoded = codec.decode(codec.encode_block(cube, fill_value=0, mask_fill=True))
    np.testing.assert_array_equal(decoded == 0, cube == 0)
    # without the mask the network smears the hole into its neighbours
    plain = codec.decode(codec.encode(cube))
    assert (plain[cube == 0] != 0).any()


def test_zarr_style_padded_chunk_is_trimmed_before_the_fit(fast):
    chunk = np.zeros((8, 16, 16), np.uint16)
    chunk[:, :11, :6] = as_uint16(smooth_cube(h=11, w=6))
    assert valid_extent(chunk, 0) == (8, 11, 6)
    buf = INRCodec(bpppb=4.0, fill_value=0, **fast).encode(chunk)
    assert inspect(buf)["valid_shape"] == (8, 11, 6)
    decoded = decode_block(buf)
    assert (decoded[:, 11:] == 0).all() and (decoded[:, :, 6:] == 0).all()
    assert decoded[:, :11, :6].min() > 500
    # float chunks padded with NaN: the same
    nan_chunk = np.full((8, 16, 16), np.nan, np.float32)
    nan_chunk[:, :16, :10] = smooth_cube(h=16, w=10)
    assert inspect(INRCodec(bpppb=4.0, fill_value="NaN", **fast).encode(nan_chunk))["valid_shape"] == (8, 16, 10)


def test_fill_value_is_part_of_the_config():
    codec = INRCodec(bpppb=1.0, fill_value=float("nan"))
    assert codec.get_config()["fill_value"] == "NaN"  # JSON-safe
    assert np.isnan(INRCodec(**{k: v for k, v in codec.get_config().items() if k != "id"}).fill_value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(padded_shape=(8, 4, 20)), "does not hold"),
        (dict(padded_shape=(8, 30, 20)), "needs a fill_value"),
        (dict(padded_shape=(8, 30, 20), fill_value=-1), "does not fit uint16"),
        (dict(padded_shape=(8, 30, 20), fill_value=np.nan), "does not fit uint16"),
    ],
)
def test_bad_padding_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        INRCodec(bpppb=1.0).encode_block(as_uint16(smooth_cube()), **kwargs)


def test_corrupted_padding_is_rejected(fast):
    buf = INRCodec(bpppb=4.0, **fast).encode_block(as_uint16(smooth_cube(h=10, w=10)), padded_shape=(8, 16, 16),
                                                   fill_value=0)
    header = bs.HEADER_BYTES
    broken = bytearray(buf)
    broken[header : header + 4] = (3).to_bytes(4, "little")  # padded bands 3 < 8 valid bands
    body = bytes(broken[: -bs.CRC_BYTES])
    with pytest.raises(StreamError, match="padding"):
        decode_block(bs.seal(body))


def test_decode_counter_counts_blocks_and_values(fast):
    buf = INRCodec(bpppb=4.0, **fast).encode(smooth_cube(h=10, w=10))
    decode_counter.reset()
    decode_block(buf)
    decode_block(buf, ys=np.array([1.5]), xs=np.array([2.5, 3.5]))
    assert (decode_counter.blocks, decode_counter.values) == (2, 8 * 100 + 8 * 2)

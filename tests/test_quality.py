"""Quality targets (``psnr=``): the rate search on stand-in encoders (milliseconds), then the codec, the
accessor, the store and the CLI on small crops of the committed Jasper Ridge fixture with tiny fits
(30 steps): these check that what is recorded is what the stored streams give, not the fits' quality."""

import json
import math
import shutil
import warnings

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr

import xr_inr
from xr_inr import INRCodec, INRZarrCodec, QualityWarning, cli, decode_block
from xr_inr.core import quality
from xr_inr.core.codec import MAX_BPPPB
from xr_inr.core.quality import TOLERANCE, Try, block_psnr, search, start_rate
from xr_inr.metrics import psnr as cube_psnr
from xr_inr.xarray_zarr import parallel
from xr_inr.xarray_zarr.sources import QUALITY_ATTR

FAST = dict(steps=30, progress=False)
TARGET = 32.0


# -- the search, on stand-ins ------------------------------------------------------------------


def stand_in(curve, smallest_rate=0.0, smallest_psnr=None):
    """``measure`` for :func:`search`: PSNR ``curve(bpppb)``, streams filling 98 % of the budget; below
    ``smallest_rate`` the method's smallest network (over budget, PSNR ``smallest_psnr``)."""
    calls = []

    def measure(rate):
        calls.append(rate)
        if rate < smallest_rate:
            return Try(rate, b"smallest", smallest_psnr, round(smallest_rate * 1000), smallest_rate, smallest=True)
        return Try(rate, repr(rate).encode(), curve(rate), round(980 * rate), 0.98 * rate)

    return measure, calls


CURVES = {  # name: (PSNR of the rate, the rate at which it reaches a PSNR)
    "3 dB per doubling": (lambda r: 40 + 3 * math.log2(r / 0.1), lambda p: 0.1 * 2 ** ((p - 40) / 3)),
    "5 dB per doubling": (lambda r: 40 + 5 * math.log2(r / 0.1), lambda p: 0.1 * 2 ** ((p - 40) / 5)),
    "9 dB per doubling": (lambda r: 40 + 9 * math.log2(r / 0.1), lambda p: 0.1 * 2 ** ((p - 40) / 9)),
    "5 dB per doubling, then 6 dB per bit": (  # at high rates each bit per value gains 6 dB
        lambda r: 40 + 5 * math.log2(r / 0.1) if r < 1.6 else 60 + 6.02 * (r - 1.6),
        lambda p: 0.1 * 2 ** ((p - 40) / 5) if p < 60 else 1.6 + (p - 60) / 6.02),
}


@pytest.mark.parametrize("name, target", [(name, target) for name in sorted(CURVES)
                                          for target in (30.0, 45.0, 55.0, 70.0) if CURVES[name][1](target) < MAX_BPPPB])
def test_search_keeps_the_smallest_stream_meeting_the_target(name, target):
    curve, inverse = CURVES[name]
    needed = inverse(target)
    measure, calls = stand_in(curve)
    result = search(measure, target, start_rate(target))
    assert result.met and result.psnr >= target and len(calls) == result.encodes <= quality.MAX_ENCODES
    chosen = next(t for t in result.tries if t.stream == result.stream)
    assert chosen.nbytes == min(t.nbytes for t in result.tries if t.psnr >= target)
    assert needed * (1 - 1e-12) <= chosen.bpppb <= needed * (1 + TOLERANCE) ** 2  # within the search's tolerance


def test_search_on_a_monotone_curve_brackets_within_tolerance():
    measure, calls = stand_in(CURVES["5 dB per doubling"][0])
    result = search(measure, 45.0, 0.1)
    rates = sorted(calls)
    lo = max(r for r in rates if CURVES["5 dB per doubling"][0](r) < 45)
    hi = min(r for r in rates if CURVES["5 dB per doubling"][0](r) >= 45)
    assert hi <= lo * (1 + TOLERANCE) and result.encodes < quality.MAX_ENCODES


def test_search_on_a_staircase_keeps_the_lowest_step_meeting_the_target():
    """Small blocks and short fits: the quality moves in steps (the architecture the budget buys)."""
    steps = [(0.0, 20.0), (0.2, 30.0), (0.45, 36.0), (0.9, 41.0), (2.0, 47.0)]  # (from this rate, PSNR)
    measure, calls = stand_in(lambda r: max(p for start, p in steps if r >= start))
    result = search(measure, 35.0, start_rate(35.0))
    chosen = next(t for t in result.tries if t.stream == result.stream)
    assert result.met and result.psnr == 36.0 and result.encodes <= quality.MAX_ENCODES
    assert chosen.bpppb <= 0.45 * (1 + TOLERANCE) ** 2


def test_search_out_of_reach_keeps_the_best_with_a_warning():
    measure, calls = stand_in(lambda r: min(50.0, 40 + 5 * math.log2(r / 0.1)))
    with pytest.warns(QualityWarning, match=r"no stream met the 60 dB target in \d encodes: keeping the best, 50.00"):
        result = search(measure, 60.0, 0.1)
    assert not result.met and result.psnr == 50.0 and len(calls) == result.encodes <= quality.MAX_ENCODES
    assert max(calls) == MAX_BPPPB  # up to the largest rate, no further
    with pytest.warns(QualityWarning):
        assert search(measure, 60.0, 0.1, max_encodes=2).encodes == 2


def test_search_stops_on_a_repeated_stream_and_on_the_smallest_network():
    calls = []

    def constant(rate):  # a constant block: the same bytes, exact, whatever the rate
        calls.append(rate)
        return Try(rate, b"constant", math.inf, 30, 1.0)

    result = search(constant, 40.0, 0.1)
    assert result.met and result.psnr == math.inf and len(calls) == 2

    measure, calls = stand_in(lambda r: 20 + 10 * math.log2(r / 0.3), smallest_rate=0.3, smallest_psnr=25.0)
    assert search(measure, 24.0, 0.02).encodes == 1  # the smallest network meets it: no lower budget helps
    measure, calls = stand_in(lambda r: 20 + 10 * math.log2(r / 0.3), smallest_rate=0.3, smallest_psnr=20.0)
    result = search(measure, 35.0, 0.02)
    assert calls[1] >= 0.3 * (1 + TOLERANCE)  # the over-budget stream counts at its own rate
    assert result.met and result.psnr >= 35


# -- the codec ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def block(jasper_crop):
    """10 bands x 20 x 20 pixels of the fixture, uint16."""
    return jasper_crop[::4, :20, :20].copy()


def test_codec_stream_meets_the_target_measured_by_the_decoder(block):
    codec = INRCodec(psnr=TARGET, steps=30)
    result = quality.encode_to_psnr(codec, block)
    decoded = decode_block(result.stream)
    assert result.met and cube_psnr(block, decoded) == pytest.approx(result.psnr) and result.psnr >= TARGET
    assert all(t.nbytes >= len(result.stream) for t in result.tries if t.psnr >= TARGET)
    assert 2 <= result.encodes <= quality.MAX_ENCODES


def test_every_encode_path_of_the_codec_searches(block, monkeypatch):
    import xr_inr.core.codec as codec_module

    seen = []

    def spy(codec, part, **where):
        seen.append((part.shape, where))
        return quality.QualityResult(codec.psnr, b"stream", math.inf, True)

    monkeypatch.setattr(codec_module, "encode_to_psnr", spy)
    codec = INRCodec(psnr=TARGET, fill_value=0)
    padded = np.zeros((10, 22, 20), block.dtype)
    padded[:, :20] = block
    assert codec.encode(padded) == b"stream"  # Zarr's path: the padding is left out
    assert codec.encode_block(block, padded_shape=(10, 30, 20), fill_value=0, mask_fill=True) == b"stream"
    assert seen == [((10, 20, 20), {"padded_shape": (10, 22, 20), "fill_value": 0.0}),
                    ((10, 20, 20), {"padded_shape": (10, 30, 20), "fill_value": 0, "mask_fill": True})]


def test_block_psnr_leaves_out_nan_nodata_and_padding():
    block = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    block[0, 0, 0] = np.nan
    decoded = np.full((2, 4, 5), 99.0)  # a padded chunk
    decoded[:, :3, :4] = block + 1
    assert block_psnr(block, decoded) == pytest.approx(10 * math.log10(22.0**2 / 1))
    nodata = np.where(np.isnan(block), -1, block)
    assert block_psnr(nodata, decoded, fill_value=-1, mask_fill=True) == pytest.approx(10 * math.log10(22.0**2))
    assert block_psnr(block, np.where(np.isnan(block), 5, block)) == math.inf


@pytest.mark.parametrize("bad", [0, -3, math.inf, math.nan, 201, True, "40", [40]])
def test_psnr_must_be_a_finite_positive_number(bad):
    with pytest.raises(ValueError, match="psnr must be a target in dB"):
        INRCodec(psnr=bad)


def test_bpppb_or_psnr_not_both():
    with pytest.raises(ValueError, match="not both"):
        INRCodec(bpppb=0.1, psnr=40)
    assert INRCodec().bpppb == 0.1 and INRCodec().psnr is None  # neither: the default rate
    codec = INRCodec(psnr=40)
    assert codec.bpppb is None and codec.psnr == 40.0 and "psnr=40.0" in repr(codec)


def test_config_round_trips_and_readers_decode_with_a_psnr_config(block):
    codec = INRCodec(psnr=42.5, method="siren", steps=10)
    config = codec.get_config()
    assert config["psnr"] == 42.5 and config["bpppb"] is None
    assert INRCodec.from_config(config).get_config() == config
    assert "psnr" not in INRCodec(bpppb=0.2).get_config()  # configs without a target are as before
    zarr_codec = INRZarrCodec(**config)
    assert INRZarrCodec.from_dict(zarr_codec.to_dict()).configuration["psnr"] == 42.5
    stream = INRCodec(bpppb=64, steps=1).encode(block[:2, :4, :4])
    for stored in (config, {**config, "psnr": 1e6}, {**config, "bpppb": 0.1}):  # the last two cannot encode
        reader = numcodecs.get_codec(stored)
        np.testing.assert_array_equal(reader.decode(stream), decode_block(stream))
    with pytest.raises(ValueError, match="stored codec config cannot encode"):
        numcodecs.get_codec({**config, "psnr": 1e6}).encode(block)


# -- the accessor, the store, the CLI ----------------------------------------------------------


@pytest.fixture(scope="module")
def cube(jasper_crop):
    """10 bands x 20 x 30 pixels, float32, a few NaN in the second chunk (chunks of 10 x 20 x 16: the
    second is an edge chunk of 14 columns)."""
    values = jasper_crop[::4, :20, :30].astype(np.float32)
    values[:, 3, 20:23] = np.nan
    return xr.DataArray(values, dims=("band", "y", "x"), name="r")


CHUNKS = {"x": 16}


@pytest.fixture(scope="module")
def written(cube, tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "q.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error", QualityWarning)  # every chunk meets the target
        out = cube.inr.to_zarr(path, psnr=TARGET, chunks=CHUNKS, **FAST)
    return path, out


def chunk_psnrs(original: xr.DataArray, decoded: xr.DataArray) -> dict:
    out = {}
    for j, start in enumerate(range(0, original.sizes["x"], CHUNKS["x"])):
        part = slice(start, start + CHUNKS["x"])
        out[(0, 0, j)] = cube_psnr(original[..., part].values, decoded[..., part].values)
    return out


def test_accessor_records_what_each_chunk_achieved(cube, written):
    path, out = written
    chunks = out.inr.inspect_chunks()
    measured = chunk_psnrs(cube, out)
    assert sorted(chunks) == sorted(measured) == [(0, 0, 0), (0, 0, 1)]
    for index, info in chunks.items():
        assert info["psnr_target"] == TARGET and 1 <= info["encodes"] <= quality.MAX_ENCODES
        assert info["psnr"] == pytest.approx(measured[index]) and info["psnr"] >= TARGET
    assert cube_psnr(cube.values, out.values) >= TARGET  # every chunk meets it: the cube does
    stored = xr_inr.open_zarr(path)["r"]
    assert QUALITY_ATTR not in stored.attrs
    assert {i: c["psnr"] for i, c in stored.inr.inspect_chunks().items()} == {i: c["psnr"] for i, c in chunks.items()}
    np.testing.assert_array_equal(stored.values, out.values)
    out.inr.to_zarr(path.with_name("v2.zarr"), zarr_format=2)  # format 2: the numcodecs config holds the target
    v2 = xr_inr.open_zarr(path.with_name("v2.zarr"))["r"]
    assert {i: c["psnr"] for i, c in v2.inr.inspect_chunks().items()} == {i: c["psnr"] for i, c in chunks.items()}
    config = zarr.open_group(path, mode="r")["r"].metadata.codecs[0].to_dict()["configuration"]
    assert config["psnr"] == TARGET and config["bpppb"] is None
    assert xr.open_zarr(path)["r"].values.shape == cube.shape  # a plain reader
    properties = stored.inr.to_stac_item(str(path)).properties
    assert properties["inr:psnr_target"] == TARGET
    assert properties["inr:chunk_psnr_min"] == pytest.approx(min(measured.values()))


def test_a_resumed_write_keeps_the_recorded_quality(cube, written, monkeypatch):
    path, out = written
    target = path.with_name("resumed.zarr")
    staging = target.with_name("resumed.zarr.writing")
    shutil.copytree(path, staging)  # an unfinished write of the same call: chunk 1 not stored yet
    group = zarr.open_group(staging, mode="r+")
    group.attrs["xr_inr_write"] = {**group.attrs["xr_inr_write"], "state": "writing"}
    array = group["r"]
    array.attrs[QUALITY_ATTR] = {k: v for k, v in array.attrs[QUALITY_ATTR].items() if k == "0.0.0"}
    (staging / "r" / "c" / "0" / "0" / "1").unlink()
    fits = []
    fit = parallel.fit_task
    monkeypatch.setattr(parallel, "fit_task", lambda *args: fits.append(args) or fit(*args))
    again = cube.inr.to_zarr(target, psnr=TARGET, chunks=CHUNKS, mode="w", **FAST)
    assert len(fits) == 1 and xr_inr.verify(target).ok
    recorded = zarr.open_group(target, mode="r")["r"].attrs[QUALITY_ATTR]
    assert recorded == zarr.open_group(path, mode="r")["r"].attrs[QUALITY_ATTR]
    assert again.inr.inspect_chunks()[(0, 0, 0)]["psnr"] == out.inr.inspect_chunks()[(0, 0, 0)]["psnr"]


def test_accessor_arguments(cube, written):
    _, out = written
    with pytest.raises(ValueError, match="not both"):
        cube.inr.compress(0.5, psnr=TARGET, **FAST)
    with pytest.raises(ValueError, match="psnr must be"):
        cube.inr.compress(psnr=-1, **FAST)
    with pytest.raises(ValueError, match="pass bpppb= or psnr="):
        cube.inr.to_zarr("never.zarr")
    with pytest.raises(ValueError, match=r"pass bpppb= or psnr= to compress \['r'\]"):
        cube.to_dataset().inr.to_zarr("never.zarr")
    with pytest.raises(ValueError, match="already compressed"):
        out.inr.to_zarr("never.zarr", psnr=TARGET + 1)
    with pytest.raises(ValueError, match="already compressed"):
        out.inr.to_zarr("never.zarr", bpppb=0.5)


def test_dataset_compress_with_a_target(cube):
    ds = cube[:, :10, :10].to_dataset()
    out = ds.inr.compress(psnr=TARGET, **FAST)
    info = out["r"].inr.inspect_chunks()[(0, 0, 0)]
    assert info["psnr"] >= TARGET and info["psnr"] == pytest.approx(cube_psnr(ds["r"].values, out["r"].values))


def test_cli_compress_to_a_target_and_info(jasper_crop, tmp_path, capsys):
    source = tmp_path / "small.npz"
    np.savez(source, cube=jasper_crop[:16, :16, ::4])  # (y, x, band): 16 x 16 x 10
    store = tmp_path / "small.zarr"
    assert cli.main(["compress", str(source), str(store), "--psnr", str(TARGET), "--steps", "30", "--quiet"]) == 0
    assert f"(target {TARGET:g})" in capsys.readouterr().out
    assert cli.main(["info", str(store)]) == 0
    assert f"PSNR target {TARGET:g} dB, per chunk" in capsys.readouterr().out
    assert cli.main(["info", str(store), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["cubes"].values()
    assert report["psnr_target"] == TARGET and report["chunk_psnr"]["0.0.0"] >= TARGET
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compress", str(source), str(tmp_path / "x.zarr"), "--psnr", "40", "--bpppb", "1"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert cli.main(["compress", str(source), str(tmp_path / "x.zarr"), "--psnr", "0"]) == 1
    assert "psnr must be a target in dB" in capsys.readouterr().err and not (tmp_path / "x.zarr").exists()

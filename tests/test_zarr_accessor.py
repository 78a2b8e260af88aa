"""The accessor, the Zarr codecs and lazy / any-resolution reading, on a real cube.

The default method (grid) runs through every path; every fit here is tiny
(30 Adam steps): the tests check plumbing and honesty (sizes, decode counts,
edge chunks, georeferencing), not quality. The crop is committed under
tests/fixtures/, so these tests run on a fresh clone too.
"""

import json
import math
import subprocess
import sys
import textwrap
import warnings

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

import xr_inr
from xr_inr import BandDimError, BudgetWarning, INRZarrCodec, find_band_dim, inspect
from xr_inr.core.decode import decode_counter
from xr_inr.xarray_zarr.accessor import DATAARRAY_VARIABLE
from xr_inr.xarray_zarr.sources import StoredCube, source_of
from xr_inr.xarray_zarr.store import without_identity_scaling

FAST = dict(steps=30, progress=False)
SIREN = dict(method="siren", steps=60, search_steps=0, lr=3e-3, depth=2, progress=False)
CHUNKS = {"band": -1, "y": 24, "x": 20}  # 40 x 36 pixels: 2 x 2 chunks, edge chunks of 16 x 16
BPPPB = 1.0


def psnr(reference, decoded):
    reference = reference.astype(np.float64)
    err = np.mean((reference - decoded.astype(np.float64)) ** 2)
    return 10 * np.log10(np.ptp(reference) ** 2 / err)


@pytest.fixture(scope="module")
def crop(jasper_crop):
    """20 bands (every 10th) x 40 x 36 pixels of Jasper Ridge, uint16, with wavelengths and map coordinates."""
    cube = jasper_crop[::2, :, 4:].copy()
    return xr.DataArray(
        cube,
        dims=("band", "y", "x"),
        coords={
            "band": ("band", np.linspace(380.0, 2500.0, cube.shape[0]), {"units": "nm"}),
            "y": 4_200_000.0 - 30.0 * np.arange(40),
            "x": 500_000.0 + 30.0 * np.arange(36),
        },
        attrs={"title": "Jasper Ridge crop", "sensor": "AVIRIS"},
        name="reflectance",
    )


@pytest.fixture(scope="module")
def compressed(crop):
    return crop.inr.compress(BPPPB, chunks=CHUNKS, **FAST)


# -- 1. the accessor and the band dimension ----------------------------------------


@pytest.mark.parametrize("name", ["band", "bands", "wavelength", "Wavelength", "spectral", "spectral_band"])
def test_band_dimension_found_by_name(name):
    da = xr.DataArray(np.zeros((3, 4, 5), np.float32), dims=("y", name, "x"))
    assert find_band_dim(da) == name and da.inr.band_dim == name


def test_band_dimension_given_or_a_clear_error():
    da = xr.DataArray(np.zeros((3, 4, 5), np.float32), dims=("layer", "row", "col"))
    with pytest.raises(BandDimError, match=r"no dimension is named like bands.*pass band_dim="):
        da.inr.band_dim
    with pytest.raises(BandDimError, match="pass band_dim="):
        da.inr.compress(0.1)
    assert find_band_dim(da, "layer") == "layer"
    with pytest.raises(BandDimError, match="'time' is not a dimension"):
        find_band_dim(da, "time")
    two = xr.DataArray(np.zeros((3, 4, 5), np.float32), dims=("band", "wavelength", "x"))
    with pytest.raises(BandDimError, match="several dimensions look like bands"):
        two.inr.band_dim
    assert isinstance(xr.Dataset().inr, xr_inr.INRDatasetAccessor)


def test_band_dim_given_to_compress_sets_the_codec_band_axis(crop):
    moved = crop.isel(band=slice(0, 6), y=slice(0, 24), x=slice(0, 20)).rename(band="layer")
    moved = moved.transpose("y", "x", "layer")
    out = moved.inr.compress(4.0, band_dim="layer", **FAST)
    stream = source_of(out.data).stream((0, 0, 0))
    assert inspect(stream)["band_axis"] == 2
    assert psnr(moved.values, out.values) > 20


# -- 2. compress -------------------------------------------------------------------


def test_compress_returns_a_lazy_array_like_the_input(crop, compressed):
    assert compressed.dims == crop.dims and compressed.attrs == crop.attrs and compressed.name == crop.name
    xr.testing.assert_identical(compressed.coords.to_dataset(), crop.coords.to_dataset())
    assert isinstance(compressed.data, dask.array.Array) and compressed.dtype == np.uint16
    assert compressed.chunks == ((20,), (24, 16), (20, 16))
    decode_counter.reset()
    values = compressed.values
    assert decode_counter.blocks == 4  # one decode per chunk, none while building the array
    # a few steps on 4 chunks; the floor only guards against garbage
    assert psnr(crop.values, values) > 30


def test_reported_size_is_the_stored_size(crop, compressed):
    source = source_of(compressed.data)
    streams = [source.stream((0, i, j)) for i in range(2) for j in range(2)]
    assert compressed.inr.nbytes == sum(len(s) for s in streams)
    assert compressed.inr.bpppb == pytest.approx(8 * compressed.inr.nbytes / crop.size)
    assert compressed.inr.bpppb <= BPPPB  # every chunk within budget, edge chunks counted by their valid size
    assert compressed.inr.chunk_shape == (20, 24, 20)
    assert not crop.inr.is_compressed and compressed.inr.is_compressed
    with pytest.raises(ValueError, match="does not hold xr-inr chunks"):
        (compressed + 1).inr.nbytes


def test_one_fit_task_per_chunk_one_torch_thread_each(crop, monkeypatch):
    import torch

    import xr_inr.xarray_zarr.parallel as parallel

    seen = []
    original = parallel.fit_task

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(parallel, "fit_task", spy)
    before = torch.get_num_threads()
    crop.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
    assert seen == [1, 1, 1, 1]
    assert torch.get_num_threads() == before  # the user's setting comes back


def test_fit_tasks_run_numpys_blas_on_one_thread_and_give_the_users_back(crop, monkeypatch):
    """Fit tasks in threads each multiplying on every core slowed each other down: each task limits BLAS as
    it limits torch, and the process's limit comes back after the fits."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import xr_inr.xarray_zarr.parallel as parallel

    def blas_threads():
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    seen = []
    original = parallel.encode_blocks

    def spy(*args):
        seen.append(blas_threads())
        return original(*args)

    monkeypatch.setattr(parallel, "encode_blocks", spy)
    user = threadpool_limits(limits=2, user_api="blas")
    try:
        assert blas_threads() == {2}
        crop.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
        assert seen == [{1}] * 4
        assert blas_threads() == {2}
    finally:
        user.restore_original_limits()


def test_fit_batch_fits_chunks_together_as_on_a_gpu(crop, compressed, monkeypatch):
    import xr_inr.xarray_zarr.parallel as parallel

    assert parallel.batch_size({"method": "grid", "device": "cuda:0"}, None) == parallel.GPU_BATCH
    assert parallel.batch_size({"method": "grid", "device": "cuda", "psnr": 40.0}, None) == 1  # searched alone
    assert parallel.batch_size({"method": "grid", "device": "cpu"}, None) == 1
    with pytest.raises(ValueError, match="fit_batch"):
        crop.inr.compress(BPPPB, chunks=CHUNKS, fit_batch=0, **FAST)
    sizes = []
    original = parallel.fit_task

    def spy(blocks, *args):
        sizes.append(len(blocks))
        return original(blocks, *args)

    monkeypatch.setattr(parallel, "fit_task", spy)
    kept = []
    monkeypatch.setattr(parallel, "keep_fit_buffers", lambda: kept.append(True))  # tests/test_scalebench.py
    batched = crop.inr.compress(BPPPB, chunks=CHUNKS, fit_batch=3, **FAST)
    assert sorted(sizes) == [1, 3] and len(kept) == 2  # 4 chunks: one task of 3, one of 1
    assert 8 * batched.inr.nbytes <= BPPPB * crop.size
    assert psnr(crop.values, batched.values) > psnr(crop.values, compressed.values) - 1.0  # as good as one by one


def test_progress_bar_per_chunk_and_quiet_switch(crop, capfd):
    small = crop.isel(y=slice(0, 24))
    small.inr.compress(BPPPB, chunks=CHUNKS, **{**FAST, "progress": True})
    err = capfd.readouterr().err
    assert "xr-inr fit (2 chunks)" in err and "2/2" in err
    small.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
    assert capfd.readouterr().err == ""


def test_default_chunking_keeps_bands_together_without_slivers(crop):
    from xr_inr.xarray_zarr.accessor import chunk_shape_for

    big = xr.DataArray(np.zeros((50, 300, 130), np.uint16), dims=("band", "y", "x"))
    assert chunk_shape_for(big, 0) == (50, 100, 65)
    assert chunk_shape_for(big, 0, 64) == (50, 64, 64)
    assert chunk_shape_for(big, 0, {"y": -1}) == (50, 300, 65)
    assert chunk_shape_for(big.chunk({"band": 10, "y": 50}), 0) == (10, 50, 130)


# -- 3. Zarr -------------------------------------------------------------------------


def test_to_zarr_writes_the_fitted_chunks_without_refitting(compressed, tmp_path, monkeypatch):
    import xr_inr.xarray_zarr.parallel as parallel

    def no_fit(*args):
        raise AssertionError("to_zarr refitted a chunk")

    monkeypatch.setattr(parallel, "fit_task", no_fit)
    decode_counter.reset()
    compressed.inr.to_zarr(tmp_path / "c.zarr")
    assert decode_counter.blocks == 0
    array = zarr.open_group(tmp_path / "c.zarr", mode="r")["reflectance"]
    stored, fitted = StoredCube(array), source_of(compressed.data)
    for index in np.ndindex(1, 2, 2):
        assert stored.stream(index) == fitted.stream(index)
    assert array.metadata.zarr_format == 3 and isinstance(array.serializer, INRZarrCodec)
    assert array.serializer.to_dict()["name"] == "xr_inr"
    with pytest.raises(ValueError, match="already compressed"):
        compressed.inr.to_zarr(tmp_path / "d.zarr", bpppb=0.1)


@pytest.fixture(scope="module")
def stores(crop, tmp_path_factory):
    """The crop as uint16 and float32 reflectance, written by the accessor in both Zarr formats."""
    folder = tmp_path_factory.mktemp("stores")
    as_float = (crop / 10_000).astype(np.float32).rename("reflectance").assign_attrs(crop.attrs)
    written = {}
    for dtype, cube in (("uint16", crop), ("float32", as_float)):
        fitted = cube.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
        for fmt in (2, 3):
            path = folder / f"{dtype}-v{fmt}.zarr"
            fitted.inr.to_zarr(path, zarr_format=fmt)
            written[(dtype, fmt)] = (path, fitted)
    return written


FRESH_READER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import xarray as xr

    report = {}
    imported_before = "xr_inr" in sys.modules  # before the first store is opened
    for path in sys.argv[1:]:
        codec_module = sys.modules.get("xr_inr.core.decode")
        start = codec_module.decode_counter.blocks if codec_module else 0
        ds = xr.open_zarr(path)
        var = ds["reflectance"]
        counter = sys.modules["xr_inr.core.decode"].decode_counter  # loaded by the codec entry point
        counter.blocks -= start
        on_open = counter.blocks
        var[:, :5, :5].values
        one_chunk = counter.blocks - on_open
        var[:, 20:30, 30:].values
        two_chunks = counter.blocks - on_open - one_chunk
        np.save(path + ".npy", var.values)
        report[path] = dict(imported_before=imported_before, dtype=str(var.dtype),
                            dask=type(var.data).__module__.split(".")[0], on_open=on_open,
                            one_chunk=one_chunk, two_chunks=two_chunks, attrs=var.attrs,
                            torch="torch" in sys.modules)
    print(json.dumps(report, default=str))
    """
)


def test_fresh_process_reads_lazily_without_importing_xr_inr(stores):
    paths = [str(path) for path, _ in stores.values()]
    result = subprocess.run([sys.executable, "-c", FRESH_READER, *paths], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for (dtype, fmt), (path, fitted) in stores.items():
        seen = report[str(path)]
        assert not seen["imported_before"]
        assert seen["dtype"] == dtype and seen["dask"] == "dask"
        assert seen["on_open"] == 0  # opening decodes nothing
        assert seen["one_chunk"] == 1 and seen["two_chunks"] == 2  # a region decodes the chunks it touches
        assert not seen["torch"]  # reading needs no torch
        assert seen["attrs"]["title"] == "Jasper Ridge crop"
        np.testing.assert_array_equal(np.load(str(path) + ".npy"), fitted.values)


def test_a_store_opened_twice_stays_an_inr_array_after_the_second_is_dropped(stores):
    path, _ = stores[("uint16", 3)]
    first = xr_inr.open_zarr(path)["reflectance"]
    xr_inr.open_zarr(path, scale=0.5)["reflectance"].values  # a second open of the same store, then dropped
    import gc

    gc.collect()
    assert first.inr.is_compressed and first.inr.nbytes > 0


def test_edge_chunks_are_fitted_on_their_valid_region(stores, crop):
    path, fitted = stores[("uint16", 3)]
    array = zarr.open_group(path, mode="r")["reflectance"]
    stored = StoredCube(array)
    info = inspect(stored.stream((0, 1, 1)))
    assert info["shape"] == (20, 24, 20) and info["valid_shape"] == (20, 16, 16)
    assert inspect(stored.stream((0, 0, 0)))["valid_shape"] == (20, 24, 20)
    # padding never reaches the fit: the edge chunk is the network of its valid region alone
    import torch

    alone = xr_inr.INRCodec(bpppb=BPPPB, **{k: v for k, v in FAST.items() if k != "progress"})
    region = crop.values[:, 24:, 20:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the accessor's fits run: float sums depend on the thread count
    try:
        alone_stream = alone.encode_block(region, padded_shape=(20, 24, 20), fill_value=0)
        np.testing.assert_array_equal(fitted.values[:, 24:, 20:], alone.decode(alone_stream)[:, :16, :16])
    finally:
        torch.set_num_threads(threads)
    float_array = zarr.open_group(stores[("float32", 3)][0], mode="r")["reflectance"]
    assert math.isnan(float_array.fill_value)


def test_a_codec_passed_to_zarr_by_hand_keeps_padding_out(crop, tmp_path):
    cube = crop.values[:6]
    array = zarr.create_array(tmp_path / "hand.zarr", shape=cube.shape, chunks=(6, 24, 20), dtype="uint16",
                              serializer=INRZarrCodec(bpppb=4.0, steps=30),
                              compressors=None, fill_value=0)
    array[:] = cube
    assert inspect(StoredCube(array).stream((0, 1, 1)))["valid_shape"] == (6, 16, 16)
    back = zarr.open_array(tmp_path / "hand.zarr", mode="r")[:]
    assert back.shape == cube.shape and psnr(cube, back) > 20


def test_nodata_is_left_out_of_the_fit_and_restored(crop, tmp_path):
    holed = crop.isel(y=slice(0, 24), x=slice(0, 20)).copy()
    holed.values[:, 5:9, 3:7] = 0
    holed.attrs["_FillValue"] = 0
    holed.inr.to_zarr(tmp_path / "nodata.zarr", BPPPB, **FAST)
    back = xr_inr.open_zarr(tmp_path / "nodata.zarr")["reflectance"]
    assert back.dtype == np.uint16 and back.attrs["_FillValue"] == 0
    values = back.values
    assert (values[:, 5:9, 3:7] == 0).all()  # nodata restored exactly
    outside = np.ones(values.shape, bool)
    outside[:, 5:9, 3:7] = False
    assert psnr(holed.values[outside], values[outside]) > 18
    # undeclared, the hole is just data: fitted, not restored exactly
    plain = holed.drop_attrs().inr.compress(BPPPB, **FAST).values
    assert (plain[:, 5:9, 3:7] != 0).any()
    masked = xr.open_zarr(tmp_path / "nodata.zarr")["reflectance"]  # xarray's CF masking, if asked for
    assert np.isnan(masked.values[:, 5:9, 3:7]).all()


def test_dataset_accessor_writes_cubes_with_inr_and_the_rest_as_usual(crop, tmp_path):
    small = crop.isel(y=slice(0, 24), x=slice(0, 20))
    ds = xr.Dataset({"reflectance": small, "quality": (("y", "x"), np.arange(480, dtype=np.int32).reshape(24, 20))},
                    attrs={"mission": "test"})
    assert ds.inr.cube_names() == ["reflectance"]
    ds.inr.to_zarr(tmp_path / "ds.zarr", BPPPB, **FAST)
    back = xr.open_zarr(tmp_path / "ds.zarr")
    assert {k: v for k, v in back.attrs.items() if k != "xr_inr_write"} == {"mission": "test"}
    assert back.attrs["xr_inr_write"]["state"] == "complete"
    np.testing.assert_array_equal(back["quality"].values, ds["quality"].values)
    assert isinstance(back["reflectance"].encoding["serializer"], INRZarrCodec)
    assert "serializer" not in back["quality"].encoding or not isinstance(back["quality"].encoding["serializer"],
                                                                          INRZarrCodec)
    assert back["reflectance"].dtype == np.uint16  # no _FillValue: nothing for xarray to mask


# -- 4. georeferencing ---------------------------------------------------------------


def _same_attrs(a: dict, b: dict) -> bool:
    """Attributes equal once JSON-normalised (tuples become lists, numpy scalars Python numbers),
    the writer's chunk manifest (seen by plain readers) aside."""
    a = {k: v for k, v in a.items() if k != "xr_inr_chunks"}

    def plain(value):
        return value.item() if isinstance(value, np.generic) else str(value)

    return json.loads(json.dumps(a, default=plain)) == json.loads(json.dumps(b, default=plain))


def _write_envi(crop, stem):
    """A BSQ .img and its .hdr with map info, projection and wavelengths, as ENVI writes them."""
    from pyproj import CRS

    crop.values.astype("<u2").tofile(f"{stem}.img")
    wavelengths = ", ".join(f"{w:.3f}" for w in crop["band"].values)
    wkt = CRS.from_epsg(32610).to_wkt(version="WKT1_ESRI")
    header = (
        "ENVI\ndescription = {test crop}\n"
        f"samples = {crop.sizes['x']}\nlines = {crop.sizes['y']}\nbands = {crop.sizes['band']}\n"
        "header offset = 0\nfile type = ENVI Standard\ndata type = 12\ninterleave = bsq\nbyte order = 0\n"
        "map info = {UTM, 1, 1, 500000, 4200000, 30, 30, 10, North, WGS-84}\n"
        f"coordinate system string = {{{wkt}}}\n"
        f"wavelength units = Nanometers\nwavelength = {{{wavelengths}}}\n"
    )
    with open(f"{stem}.hdr", "w") as hdr:
        hdr.write(header)


@pytest.mark.parametrize("kind, zarr_format", [("geotiff", 3), ("geotiff", 2), ("envi", 3)])
def test_georeferencing_survives(crop, tmp_path, kind, zarr_format, write_geotiff):
    rioxarray = pytest.importorskip("rioxarray")
    if kind == "geotiff":
        write_geotiff(crop, tmp_path / "crop.tif")
        source = rioxarray.open_rasterio(tmp_path / "crop.tif").load()
        source = source.assign_coords(band=crop["band"])  # GeoTIFF has no wavelengths: the user adds them
    else:
        _write_envi(crop, tmp_path / "crop")
        source = rioxarray.open_rasterio(tmp_path / "crop.img").load()
        source = source.swap_dims(band="wavelength").drop_vars("band").rename(wavelength="band")
    assert source.dtype == np.uint16 and source.rio.crs is not None
    source.inr.to_zarr(tmp_path / "geo.zarr", BPPPB, zarr_format=zarr_format, chunks=CHUNKS, **FAST)

    for back in (
        xr_inr.open_zarr(tmp_path / "geo.zarr"),
        xr.open_zarr(tmp_path / "geo.zarr", decode_coords="all", mask_and_scale=False),
    ):
        back = back[list(back.data_vars)[0]]
        assert back.dtype == np.uint16
        assert back.rio.crs == source.rio.crs and back.rio.crs.to_epsg() == 32610
        assert back.rio.transform() == source.rio.transform()
        np.testing.assert_allclose(back["band"].values, crop["band"].values, rtol=1e-6)
        np.testing.assert_array_equal(back["x"].values, source["x"].values)
        expected = without_identity_scaling(source.attrs)  # rioxarray's scale_factor 1, add_offset 0 dropped
        assert _same_attrs(back.attrs, expected), (back.attrs, expected)
        assert psnr(source.values, back.values) > 18


def test_plain_xarray_reads_a_geotiff_cube_back_as_uint16(crop, tmp_path, write_geotiff):
    """rioxarray's identity scale_factor / add_offset are not written, so CF decoding leaves the dtype alone."""
    rioxarray = pytest.importorskip("rioxarray")
    write_geotiff(crop, tmp_path / "crop.tif", nodata=None)
    source = rioxarray.open_rasterio(tmp_path / "crop.tif").load()
    assert source.attrs["scale_factor"] == 1.0 and source.attrs["add_offset"] == 0.0
    source.inr.to_zarr(tmp_path / "geo.zarr", BPPPB, chunks=CHUNKS, **FAST)
    back = xr.open_zarr(tmp_path / "geo.zarr", decode_coords="all")[DATAARRAY_VARIABLE]
    assert back.dtype == np.uint16 and "scale_factor" not in back.attrs and "add_offset" not in back.attrs
    assert back.rio.crs.to_epsg() == 32610
    assert psnr(source.values, back.values) > 18


# -- 5. any-resolution decode ----------------------------------------------------------


def test_preview_evaluates_only_the_requested_grid(stores, crop):
    path, fitted = stores[("uint16", 3)]
    full = fitted.values
    decode_counter.reset()
    preview = xr_inr.open_zarr(path, scale=0.25)["reflectance"]
    assert decode_counter.blocks == 0
    assert preview.shape == (20, 10, 9) and isinstance(preview.data, dask.array.Array)
    values = preview.values
    assert decode_counter.blocks == 4  # each chunk's network evaluated once...
    assert decode_counter.values == values.size == full.size // 16  # ...at the preview's pixels only
    # pixel centres: preview pixel j covers input pixels 4j .. 4j + 3
    np.testing.assert_allclose(preview["x"].values, crop["x"].values[::4] + 45.0)
    block_mean = full.reshape(20, 10, 4, 9, 4).mean(axis=(2, 4))
    assert psnr(block_mean, values) > 18
    # at scale 1 the grid is the pixel grid: exactly the full decode
    np.testing.assert_array_equal(xr_inr.open_zarr(path, scale=1)["reflectance"].values, full)


def test_sub_region_at_chosen_points(stores, crop):
    path, fitted = stores[("float32", 2)]
    opened = xr_inr.open_zarr(path)["reflectance"]
    assert opened.inr.nbytes == fitted.inr.nbytes and opened.inr.bpppb <= BPPPB
    decode_counter.reset()
    points = opened.inr.interp(y=crop["y"].values[20:30], x=crop["x"].values[[3]]).values
    assert decode_counter.values == 20 * 10 * 1  # two chunks touched, ten points evaluated in all
    np.testing.assert_allclose(points, fitted.values[:, 20:30, [3]], rtol=1e-4, atol=1e-5)


def test_siren_method_through_the_accessor_zarr_and_a_preview(crop, tmp_path):
    """The paper's method on the same paths: compress, store, reopen, evaluate at fractional positions."""
    fitted = crop.inr.compress(BPPPB, chunks=CHUNKS, **SIREN)
    assert {inspect(source_of(fitted.data).stream(i))["method"] for i in np.ndindex(1, 2, 2)} == {"siren"}
    fitted.inr.to_zarr(tmp_path / "siren.zarr")
    back = xr_inr.open_zarr(tmp_path / "siren.zarr")["reflectance"]
    np.testing.assert_array_equal(back.values, fitted.values)
    preview = xr_inr.open_zarr(tmp_path / "siren.zarr", scale=0.5)["reflectance"]
    assert preview.shape == (20, 20, 18) and preview.dtype == np.uint16


def test_preview_keeps_the_georeference(crop, tmp_path, write_geotiff):
    pytest.importorskip("rioxarray")
    write_geotiff(crop, tmp_path / "crop.tif")
    import rioxarray

    source = rioxarray.open_rasterio(tmp_path / "crop.tif").load()
    source.inr.to_zarr(tmp_path / "geo.zarr", BPPPB, chunks=CHUNKS, **FAST)
    preview = xr_inr.open_zarr(tmp_path / "geo.zarr", scale=0.25)
    var = preview[list(preview.data_vars)[0]]
    assert var.rio.crs.to_epsg() == 32610
    transform = var.rio.transform()
    assert (transform.a, transform.e, transform.c, transform.f) == (120.0, -120.0, 500_000.0, 4_200_000.0)
    assert var.rio.transform(recalc=True) == transform


def test_the_encoders_warnings_are_issued_once_naming_their_chunk():
    tiny = xr.DataArray(np.linspace(0, 1, 120, dtype=np.float32).reshape(30, 2, 2), dims=("band", "y", "x"),
                        name="tiny")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny.inr.compress(0.1, chunks={"y": 1, "x": 2}, progress=False, scheduler="threads")
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, BudgetWarning))
    assert len(messages) == 2  # once each: collected in the fit tasks, issued by the caller
    assert messages[0].startswith("tiny chunk (0, 0, 0): ") and messages[1].startswith("tiny chunk (0, 1, 0): ")


# -- distributed -------------------------------------------------------------------------


def test_an_open_distributed_client_is_used(crop, compressed, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            remote = crop.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
        fit_keys = [t["key"] for t in tasks.data if str(t["key"]).startswith("xr-inr-fit-")]
        assert len(fit_keys) == 4  # one task per chunk, on the cluster's worker processes
        workers = {t["worker"] for t in tasks.data}
        assert workers <= set(client.scheduler_info()["workers"])
        values = remote.values  # decoded on the workers too: the streams travel with the tasks
        stored = crop.inr.to_zarr(tmp_path / "remote.zarr", BPPPB, chunks=CHUNKS, **FAST)  # chunks stored as fitted
        tiny = xr.DataArray(np.linspace(0, 1, 120, dtype=np.float32).reshape(30, 2, 2), dims=("band", "y", "x"))
        with pytest.warns(BudgetWarning) as caught:  # issued by the workers, relayed by the client
            tiny.inr.compress(0.1, chunks={"y": 1, "x": 2}, progress=False)
    assert xr_inr.verify(tmp_path / "remote.zarr").ok
    assert source_of(stored.data).streams == source_of(compressed.data).streams
    assert source_of(remote.data).streams == source_of(compressed.data).streams  # byte-identical chunks
    np.testing.assert_array_equal(values, compressed.values)  # same seed, one thread: same networks
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, BudgetWarning))
    assert len(messages) == 2 and all("cannot hold a network" in m for m in messages)
    assert messages[0].startswith("chunk (0, 0, 0): ") and messages[1].startswith("chunk (0, 1, 0): ")


def test_example_script_runs(shared_dataset):
    data = shared_dataset("jasper_ridge_100x100x198.npz")
    result = subprocess.run(
        [sys.executable, "examples/compress_to_zarr.py", "--data", str(data), "--steps", "10", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=str(__import__("pathlib").Path(__file__).parent.parent),
    )
    assert result.returncode == 0, result.stderr
    assert "fitted 4 chunks" in result.stdout
    assert "opening decoded 0 of 4 chunks; a 10 x 10 pixel region decoded 1; the whole cube 4" in result.stdout
    assert "torch imported by the reader: False" in result.stdout
    assert "PSNR" in result.stdout and "bpppb 0.0" in result.stdout


def test_a_client_passed_as_scheduler_reads_every_chunk_on_its_workers(crop, tmp_path):
    """Not the default client: the input's fingerprint (hashed for resuming) and the fits both run
    on its workers, and only the streams and 32-byte digests come back."""
    distributed = pytest.importorskip("distributed")
    from xr_inr.xarray_zarr import parallel

    small = crop.isel(band=slice(0, 4)).chunk({"band": -1, "y": 20, "x": 18})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client, distributed.get_task_stream(client) as tasks:
            assert parallel.default_client() is None
            small.inr.to_zarr(tmp_path / "c.zarr", BPPPB, steps=2, progress=False, scheduler=client)
    keys = [str(t["key"]) for t in tasks.data]
    assert sum(k.startswith("_digest-") for k in keys) == 4 and sum(k.startswith("xr-inr-fit-") for k in keys) == 4
    assert xr_inr.verify(tmp_path / "c.zarr").ok

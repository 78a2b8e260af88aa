import hashlib

import h5py
import numpy as np
import pytest
import scipy.io

from xr_inr.tools import datasets


def _cube_yxb(n_row=5, n_col=3, n_band=4, dtype=np.uint16):
    """A (y, x, band) cube whose every value is distinct."""
    return np.arange(n_row * n_col * n_band, dtype=dtype).reshape(n_row, n_col, n_band) * 3 + 1


def _matlab_matrix(cube_yxb):
    """bands x pixels as MATLAB's reshape(cube, nRow*nCol, nBand)' gives it."""
    n_row, n_col, n_band = cube_yxb.shape
    return cube_yxb.reshape(n_row * n_col, n_band, order="F").T


def _save_v73(path, variables):
    """A MATLAB v7.3 style file: HDF5 after a 512-byte header, axes stored reversed."""
    with h5py.File(path, "w", userblock_size=512) as mat:
        for key, value in variables.items():
            mat.create_dataset(key, data=np.asarray(value).T)
        mat.create_group("#refs#")
    with open(path, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file, written by the xr-inr tests")


def _check_cube(da, cube_yxb):
    assert da.dims == ("band", "y", "x")
    assert da.dtype == cube_yxb.dtype
    np.testing.assert_array_equal(da.values, cube_yxb.transpose(2, 0, 1))
    np.testing.assert_array_equal(da["band"].values, np.arange(cube_yxb.shape[2]))
    assert {"name", "source"} <= set(da.attrs)


def test_npz_layout(shared_dataset):
    da = datasets.load_npz(shared_dataset("jasper_ridge_100x100x198.npz"))
    raw = np.load(shared_dataset("jasper_ridge_100x100x198.npz"))["cube"]
    _check_cube(da, raw)
    assert da.attrs["name"] == "jasper_ridge_100x100x198"


def test_published_jasper_mat_matches_npz(shared_dataset):
    from_mat = datasets.load(shared_dataset("jasperRidge2_R198.mat"))
    from_npz = datasets.load(shared_dataset("jasper_ridge_100x100x198.npz"))
    assert from_mat.attrs["variable"] == "Y"
    assert from_mat.dtype == from_npz.dtype == np.uint16
    np.testing.assert_array_equal(from_mat.values, from_npz.values)
    assert from_mat["source_band"].size == 198


@pytest.mark.parametrize("writer", ["v5", "v7.3"])
def test_mat_cube_layout(tmp_path, writer):
    cube = _cube_yxb(dtype=np.int16)
    path = tmp_path / "PaviaU.mat"
    variables = {"paviaU": cube, "other": np.ones((3, 3))}
    scipy.io.savemat(path, variables) if writer == "v5" else _save_v73(path, variables)
    da = datasets.load_mat(path)
    _check_cube(da, cube)
    assert da.attrs["variable"] == "paviaU"
    assert da.attrs["name"] == "Pavia University"


@pytest.mark.parametrize("writer", ["v5", "v7.3"])
@pytest.mark.parametrize("key", ["Y", "V"])
def test_mat_matrix_layout_non_square(tmp_path, writer, key):
    cube = _cube_yxb(n_row=5, n_col=3)
    path = tmp_path / "scene.mat"
    variables = {key: _matlab_matrix(cube), "nRow": np.array([[5.0]]), "nCol": np.array([[3.0]])}
    scipy.io.savemat(path, variables) if writer == "v5" else _save_v73(path, variables)
    _check_cube(datasets.load_mat(path), cube)


def test_mat_single_array_and_explicit_name(tmp_path):
    cube = _cube_yxb(dtype=np.float32)
    path = tmp_path / "anything.mat"
    scipy.io.savemat(path, {"hsi": cube, "hsi_gt": np.ones((5, 3)), "scale": 2.0})
    _check_cube(datasets.load_mat(path), cube)
    _check_cube(datasets.load_mat(path, name="hsi"), cube)
    with pytest.raises(KeyError):
        datasets.load_mat(path, name="missing")


def test_mat_ambiguous_variable_is_an_error(tmp_path):
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"a": _cube_yxb(), "b": _cube_yxb()})
    with pytest.raises(ValueError, match="name="):
        datasets.load_mat(path)


def _georeferenced(cube_yxb):
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    n_row, n_col, _ = cube_yxb.shape
    da = xr.DataArray(
        cube_yxb.transpose(2, 0, 1),
        dims=("band", "y", "x"),
        coords={"y": 4_000_000.0 - 30 * np.arange(n_row) - 15, "x": 500_000.0 + 30 * np.arange(n_col) + 15},
    )
    return da.rio.write_crs("EPSG:32610").rio.write_nodata(0, encoded=False)


def test_envi_round_trip_keeps_wavelengths_crs_and_dtype(tmp_path, shared_dataset):
    import rasterio

    cube = np.load(shared_dataset("jasper_ridge_100x100x198.npz"))["cube"][:8, :6, :5]
    source = _georeferenced(cube)
    image = tmp_path / "crop.img"
    source.rio.to_raster(image, driver="ENVI")
    wavelengths = [400.5, 410.0, 420.25, 430.0, 440.0]
    with rasterio.open(image, "r+") as raster:
        raster.update_tags(ns="ENVI", wavelength="{" + ", ".join(map(str, wavelengths)) + "}",
                           wavelength_units="Nanometers")

    for path in (image, tmp_path / "crop.hdr"):
        da = datasets.load(path)
        assert da.dims == ("band", "y", "x") and da.dtype == np.uint16
        np.testing.assert_array_equal(da.values, cube.transpose(2, 0, 1))
        np.testing.assert_allclose(da["band"].values, wavelengths)
        assert da["band"].attrs["units"] == "Nanometers"
        assert da.rio.crs.to_epsg() == 32610
        assert da.rio.transform() == source.rio.transform()
        assert da.attrs["_FillValue"] == 0


def test_geotiff_round_trip_without_wavelengths(tmp_path, shared_dataset):
    cube = np.load(shared_dataset("jasper_ridge_100x100x198.npz"))["cube"][:7, :9, :3]
    source = _georeferenced(cube)
    path = tmp_path / "crop.tif"
    source.rio.to_raster(path)
    da = datasets.load(path)
    assert da.dtype == np.uint16 and da.attrs["_FillValue"] == 0
    np.testing.assert_array_equal(da.values, cube.transpose(2, 0, 1))
    np.testing.assert_array_equal(da["band"].values, [0, 1, 2])
    assert da.rio.crs.to_epsg() == 32610
    assert da.rio.transform() == source.rio.transform()


def test_drop_constant_bands(shared_dataset):
    da = datasets.load(shared_dataset("jasper_ridge_100x100x198.npz")).isel(y=slice(0, 10), x=slice(0, 10))
    assert datasets.drop_constant_bands(da).sizes["band"] == da.sizes["band"]
    zeroed = da.copy()
    zeroed[[3, 100]] = 0
    zeroed[50] = 7
    kept = datasets.drop_constant_bands(zeroed)
    assert kept.attrs["dropped_bands"] == [3, 50, 100]
    np.testing.assert_array_equal(kept.values, np.delete(zeroed.values, [3, 50, 100], axis=0))


def test_drop_constant_bands_with_nan():
    import xarray as xr

    values = np.random.default_rng(0).normal(size=(3, 4, 4))
    values[1] = 5.0
    values[1, 0, 0] = np.nan  # still constant over its finite values
    values[2, 1, 1] = np.nan
    kept = datasets.drop_constant_bands(xr.DataArray(values, dims=("band", "y", "x"), coords={"band": [10, 20, 30]}))
    assert kept["band"].values.tolist() == [10, 30]
    assert kept.attrs["dropped_bands"] == [20]


def test_fetch_uses_a_verified_cache_offline(tmp_path, monkeypatch):
    cube = _cube_yxb()
    cached = tmp_path / "tiny_scene.mat"
    scipy.io.savemat(cached, {"Y": _matlab_matrix(cube), "nRow": 5, "nCol": 3})
    sha256 = hashlib.sha256(cached.read_bytes()).hexdigest()
    scene = datasets.RemoteScene("https://example.org/files/tiny_scene.mat", sha256, "Y")
    monkeypatch.setitem(datasets.REGISTRY, "tiny", scene)

    assert datasets.fetch("tiny", cache_dir=tmp_path) == cached
    _check_cube(datasets.load("tiny", cache_dir=tmp_path), cube)

    # a scene whose file holds a cube of another shape (a wrong or damaged download) is refused
    monkeypatch.setitem(datasets.REGISTRY, "tiny", datasets.RemoteScene(scene.url, sha256, "Y", (9, 5, 3)))
    with pytest.raises(ValueError, match="expected"):
        datasets.load("tiny", cache_dir=tmp_path)


def test_registry_and_unknown_names():
    for scene in datasets.REGISTRY.values():
        assert scene.url.startswith("https://www.ehu.eus/ccwintco/uploads/")
        assert scene.sha256 is None or len(scene.sha256) == 64
        assert len(scene.shape) == 3  # checked on load while the sha256 sums are unknown
    with pytest.raises(FileNotFoundError):
        datasets.load("no_such_scene_or_file")

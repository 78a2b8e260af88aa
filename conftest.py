"""Shared test fixtures: where the real hyperspectral cubes are.

A small crop of a real scene is committed under tests/fixtures/ (its source is
named in the README there), so a fresh clone runs the real-data tests. Tests
that need the larger cubes look in $XR_INR_DATA, else ../shared/datasets
beside the repository. They skip when the data is absent (a user's machine)
but fail in CI (CI=true), where the data is required.
"""

import os
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy and torch load
    os.environ.setdefault(_variable, "1")  # one thread each: tests check results, and the machine may be shared

import numpy as np
import pytest

DATA_ENV = "XR_INR_DATA"
REPO = Path(__file__).resolve().parent
FIXTURES = REPO / "tests" / "fixtures"


def datasets_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "datasets")


def _missing(message: str):
    """Skip a test whose data is absent; in CI the data is required, so fail."""
    if os.environ.get("CI"):
        pytest.fail(message + ": the shared datasets are required in CI")
    pytest.skip(message)


def require_dataset(filename: str) -> Path:
    """Path of a shared dataset file; skip (or fail in CI) when it is missing."""
    path = datasets_dir() / filename
    if not path.exists():
        _missing(f"dataset {filename} not found in {datasets_dir()} (set ${DATA_ENV})")
    return path


@pytest.fixture
def shared_dataset():
    """Callable fixture: shared_dataset("jasper_ridge_100x100x198.npz") -> Path."""
    return require_dataset


@pytest.fixture(scope="session")
def jasper_crop() -> np.ndarray:
    """The committed crop of Jasper Ridge as (band, y, x) uint16, 40 x 40 x 40 (every 5th band)."""
    return np.load(FIXTURES / "jasper_ridge_crop_40x40x40.npz")["cube"].transpose(2, 0, 1).copy()


@pytest.fixture(scope="session")
def jasper_cube() -> np.ndarray:
    """Jasper Ridge as (band, y, x) uint16, 198 x 100 x 100."""
    path = require_dataset("jasper_ridge_100x100x198.npz")
    return np.load(path)["cube"].transpose(2, 0, 1).copy()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared data folder; skip (or fail in CI) when it is missing."""
    folder = datasets_dir()
    if not folder.is_dir():
        _missing(f"shared datasets folder {folder} not found (set ${DATA_ENV})")
    return folder


def _write_geotiff(cube, path, nodata=0):
    """A (band, y, x) DataArray as a GeoTIFF with rioxarray: EPSG:32610, 30 m pixels from (500000, 4200000)."""
    from rasterio.transform import from_origin

    da = cube.drop_vars(["y", "x"]).assign_coords(band=np.arange(1, cube.sizes["band"] + 1))
    da = da.rio.write_crs("EPSG:32610").rio.write_transform(from_origin(500_000.0, 4_200_000.0, 30.0, 30.0))
    if nodata is not None:
        da = da.rio.write_nodata(nodata)
    da.rio.to_raster(path)


@pytest.fixture(scope="session")
def write_geotiff():
    """Callable fixture: write_geotiff(cube, path, nodata=0) writes a (band, y, x) cube with y, x coords."""
    pytest.importorskip("rioxarray")
    return _write_geotiff


@pytest.fixture(scope="session")
def crop_geotiff(jasper_crop, write_geotiff, tmp_path_factory):
    """(path, wavelengths): 10 bands (every 4th) x 40 x 40 of the crop, uint16, EPSG:32610, nodata 0,
    each band's wavelength in its metadata."""
    import rasterio
    import xarray as xr

    cube = xr.DataArray(jasper_crop[::4], dims=("band", "y", "x"), coords={"y": np.arange(40), "x": np.arange(40)})
    path = tmp_path_factory.mktemp("input") / "crop.tif"
    write_geotiff(cube, path)
    wavelengths = np.linspace(400.0, 2400.0, cube.sizes["band"])
    with rasterio.open(path, "r+") as raster:
        for index, value in zip(raster.indexes, wavelengths, strict=True):
            raster.update_tags(index, wavelength=str(value), wavelength_units="nm")
    return path, wavelengths


@pytest.fixture(scope="session")
def crop_store(crop_geotiff, tmp_path_factory):
    """The crop GeoTIFF compressed by `xr-inr compress` (1 bpppb, 30 steps, 4 chunks of 24 x 24, 2 threads)."""
    from xr_inr import cli

    path = tmp_path_factory.mktemp("out") / "crop.zarr"
    argv = ["compress", str(crop_geotiff[0]), str(path), "--chunks", "24", "--workers", "2", "--bpppb", "1",
            "--steps", "30", "--quiet"]
    assert cli.main(argv) == 0
    return path

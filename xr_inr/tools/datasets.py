"""Loaders for hyperspectral cubes, all returning an ``xarray.DataArray`` (band, y, x).

The ``band`` coordinate holds wavelengths when the file states them (ENVI
headers), otherwise the band index 0..n-1. Every result carries ``name`` and
``source`` attributes. Values keep the dtype of the file: no masking, no
scaling (``_FillValue``, ``scale_factor`` and ``add_offset`` stay in attrs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import xarray as xr

__all__ = [
    "REGISTRY",
    "RemoteScene",
    "drop_constant_bands",
    "fetch",
    "load",
    "load_mat",
    "load_npz",
    "load_raster",
]

# Cube variables of the published (y, x, band) .mat files, lower-cased.
_MAT_CUBE_NAMES = {
    "indian_pines_corrected": "Indian Pines (corrected)",
    "indian_pines": "Indian Pines",
    "paviau": "Pavia University",
    "pavia": "Pavia Centre",
    "salinas_corrected": "Salinas (corrected)",
    "salinas": "Salinas",
    "ksc": "Kennedy Space Center",
    "botswana": "Botswana",
}
# Unmixing-style files (Jasper Ridge, Samson, Urban, Cuprite): bands x pixels + nRow/nCol.
_MAT_MATRIX_NAMES = ("Y", "V")
_ENVI_DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
_RASTER_SUFFIXES = {".tif", ".tiff", *_ENVI_DATA_SUFFIXES}


def _cube_array(cube_band_y_x: np.ndarray, name: str, source: str, **attrs) -> xr.DataArray:
    return xr.DataArray(
        cube_band_y_x,
        dims=("band", "y", "x"),
        coords={"band": np.arange(cube_band_y_x.shape[0])},
        attrs={"name": name, "source": source, **attrs},
    )


def load_npz(path) -> xr.DataArray:
    """A shared ``.npz`` file holding ``cube`` as (y, x, band)."""
    path = Path(path)
    with np.load(path) as archive:
        key = "cube" if "cube" in archive.files else None
        if key is None and len(archive.files) == 1:
            key = archive.files[0]
        if key is None:
            raise ValueError(f"{path}: no 'cube' array among {archive.files}")
        cube = archive[key]
    if cube.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D (y, x, band) array, got shape {cube.shape}")
    return _cube_array(np.ascontiguousarray(cube.transpose(2, 0, 1)), path.stem, str(path))


def _read_mat_variables(path: Path) -> dict[str, np.ndarray]:
    """Numeric variables of a .mat file, in MATLAB's own axis order, v5 or v7.3 (HDF5)."""
    import h5py

    if h5py.is_hdf5(path):
        variables = {}
        with h5py.File(path, "r") as mat:
            for key, item in mat.items():
                if key.startswith("#") or not isinstance(item, h5py.Dataset):
                    continue
                if item.dtype.kind in "iuf":
                    # HDF5 stores MATLAB's column-major arrays with the axes reversed.
                    variables[key] = np.asarray(item).T
        return variables

    from scipy.io import loadmat

    contents = loadmat(path)
    return {
        key: value
        for key, value in contents.items()
        if not key.startswith("__") and isinstance(value, np.ndarray) and value.dtype.kind in "iuf"
    }


def _pick_mat_variable(variables: dict[str, np.ndarray], path: Path) -> str:
    lowered = {key.lower(): key for key in variables}
    for known in _MAT_CUBE_NAMES:
        if known in lowered:
            return lowered[known]
    for key in _MAT_MATRIX_NAMES:
        if key in variables and {"nRow", "nCol"} <= set(variables):
            return key
    candidates = [key for key, value in variables.items() if value.ndim >= 2 and value.size > 1]
    candidates = [key for key in candidates if not key.lower().endswith("_gt")]
    if len(candidates) != 1:
        raise ValueError(f"{path}: cannot tell which variable is the cube among {candidates}; pass name=")
    return candidates[0]


def _matrix_to_cube(matrix: np.ndarray, n_row: int, n_col: int, path: Path) -> np.ndarray:
    """bands x pixels, pixels in MATLAB column-major order -> (band, y, x).

    Pixel p (0-based) sits at row p % nRow, column p // nRow, so a C-order
    reshape to (band, nCol, nRow) gives (band, x, y).
    """
    n_pixels = n_row * n_col
    if matrix.shape[1] != n_pixels and matrix.shape[0] == n_pixels:
        matrix = matrix.T
    if matrix.shape[1] != n_pixels:
        raise ValueError(f"{path}: matrix {matrix.shape} does not hold nRow*nCol = {n_pixels} pixels")
    return np.ascontiguousarray(matrix.reshape(matrix.shape[0], n_col, n_row).transpose(0, 2, 1))


def load_mat(path, name: str | None = None) -> xr.DataArray:
    """A published .mat scene (MATLAB v5 or v7.3) as (band, y, x).

    Two layouts: a (y, x, band) cube (Indian Pines, Pavia, Salinas, KSC,
    Botswana...) or a bands x pixels matrix ``Y``/``V`` with ``nRow``/``nCol``
    (Jasper Ridge, Samson, Urban, Cuprite), pixels in column-major order.
    ``name`` picks the variable; by default a known cube name, else ``Y``/``V``
    with ``nRow``/``nCol``, else the single numeric array of 2 or more dims.
    """
    path = Path(path)
    variables = _read_mat_variables(path)
    if name is None:
        name = _pick_mat_variable(variables, path)
    elif name not in variables:
        raise KeyError(f"{path}: no numeric variable {name!r}; found {sorted(variables)}")
    data = variables[name]
    if data.ndim == 3:
        cube = np.ascontiguousarray(data.transpose(2, 0, 1))
    elif data.ndim == 2 and {"nRow", "nCol"} <= set(variables):
        n_row, n_col = int(variables["nRow"].item()), int(variables["nCol"].item())
        cube = _matrix_to_cube(data, n_row, n_col, path)
    else:
        raise ValueError(f"{path}: variable {name!r} of shape {data.shape} is not a cube (no nRow/nCol)")
    title = _MAT_CUBE_NAMES.get(name.lower(), path.stem)
    result = _cube_array(cube, title, str(path), variable=name)
    if "SlectBands" in variables and variables["SlectBands"].size == cube.shape[0]:
        # Jasper Ridge and Urban list the sensor bands they kept (1-based).
        result = result.assign_coords(source_band=("band", variables["SlectBands"].ravel().astype(int)))
    return result


def load_raster(path) -> xr.DataArray:
    """An ENVI (.img/.dat + .hdr) or GeoTIFF file via rioxarray, CRS and transform kept.

    Read without masking or scaling, so integer data keeps its dtype; the
    ``_FillValue`` / ``scale_factor`` / ``add_offset`` a user needs stay in attrs.
    ENVI wavelengths, or a ``wavelength`` item in every band's metadata (as
    ``xr-inr decode`` writes GeoTIFFs), become the ``band`` coordinate.
    """
    import rioxarray

    from ..xarray_zarr.store import without_identity_scaling

    path = Path(path)
    with rioxarray.open_rasterio(path, mask_and_scale=False) as opened:
        da = opened.load()
    attrs = without_identity_scaling(da.attrs)
    units = attrs.pop("wavelength_units", None)
    if "wavelength" in da.coords:
        wavelengths = da["wavelength"].values.astype(np.float64)
        da = da.drop_vars("wavelength")
    else:
        wavelengths = _band_wavelengths(path)
    if wavelengths is not None:
        da = da.assign_coords(band=wavelengths)
        if units:
            da["band"].attrs["units"] = units
    else:
        da = da.assign_coords(band=np.arange(da.sizes["band"]))
    attrs.pop("wavelength", None)  # first band's value only, as rioxarray copies it
    da.attrs = {**attrs, "name": path.stem, "source": str(path)}
    return da


def _band_wavelengths(path: Path) -> np.ndarray | None:
    """The ``wavelength`` metadata item of every band, when each band has one."""
    import rasterio

    with rasterio.open(path) as raster:
        tags = [raster.tags(index) for index in raster.indexes]
    if not all("wavelength" in t for t in tags):
        return None
    return np.array([float(t["wavelength"]) for t in tags])


def _envi_data_file(header: Path) -> Path:
    for suffix in (*_ENVI_DATA_SUFFIXES, ""):
        candidate = header.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no ENVI data file beside {header}")


def drop_constant_bands(da: xr.DataArray) -> xr.DataArray:
    """Drop the bands whose finite values are all equal (zeroed or saturated bands).

    The coordinates of the dropped bands are listed in ``attrs["dropped_bands"]``.
    """
    values = da.values.reshape(da.sizes["band"], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands: spread NaN, dropped
        spread = np.nanmax(values, axis=1) - np.nanmin(values, axis=1)
    constant = ~(spread > 0)
    kept = da.isel(band=np.flatnonzero(~constant))
    kept.attrs = {**da.attrs, "dropped_bands": da["band"].values[constant].tolist()}
    return kept


@dataclass(frozen=True)
class RemoteScene:
    """A public .mat scene: where to get it, its sha256 (None when unverified), its variable,
    and the (band, y, x) shape its cube must have (None: not checked)."""

    url: str
    sha256: str | None
    variable: str
    shape: tuple[int, int, int] | None = None


# The GIC group (UPV/EHU) "Hyperspectral Remote Sensing Scenes" files. The
# sha256 sums are None: no copy could be downloaded here to compute them, and
# none is published with the files, so pooch cannot verify these downloads yet;
# until they are filled in, a loaded scene is checked against its known shape.
_EHU = "https://www.ehu.eus/ccwintco/uploads/"
REGISTRY: dict[str, RemoteScene] = {
    "indian_pines": RemoteScene(_EHU + "6/67/Indian_pines_corrected.mat", None, "indian_pines_corrected", (200, 145, 145)),
    "pavia_university": RemoteScene(_EHU + "e/ee/PaviaU.mat", None, "paviaU", (103, 610, 340)),
    "pavia_centre": RemoteScene(_EHU + "e/e3/Pavia.mat", None, "pavia", (102, 1096, 715)),
    "salinas": RemoteScene(_EHU + "a/a3/Salinas_corrected.mat", None, "salinas_corrected", (204, 512, 217)),
    "ksc": RemoteScene(_EHU + "2/26/KSC.mat", None, "KSC", (176, 512, 614)),
    "botswana": RemoteScene(_EHU + "7/72/Botswana.mat", None, "Botswana", (145, 1476, 256)),
}


def fetch(name: str, cache_dir=None, registry: dict[str, RemoteScene] = REGISTRY) -> Path:
    """Path of a registry scene, downloaded with pooch into ``cache_dir`` unless already there.

    A file already in the cache is used as is when its sha256 matches (or no
    sha256 is known); default cache: pooch's user cache folder for "xr-inr".
    """
    import pooch

    scene = registry[name]
    known_hash = f"sha256:{scene.sha256}" if scene.sha256 else None
    filename = Path(urlparse(scene.url).path).name
    folder = cache_dir if cache_dir is not None else pooch.os_cache("xr-inr")
    return Path(pooch.retrieve(scene.url, known_hash, fname=filename, path=folder, progressbar=False))


def load(path_or_name, cache_dir=None) -> xr.DataArray:
    """Load a file by its suffix (.npz, .mat, .hdr, ENVI data, .tif), or a REGISTRY scene by name."""
    path = Path(path_or_name)
    if not path.exists():
        if str(path_or_name) in REGISTRY:
            scene = REGISTRY[str(path_or_name)]
            da = load_mat(fetch(str(path_or_name), cache_dir), scene.variable)
            if scene.shape is not None and da.shape != scene.shape:
                raise ValueError(f"{path_or_name}: the downloaded cube is {da.shape}, expected {scene.shape}")
            return da
        raise FileNotFoundError(f"{path_or_name}: no such file, nor a scene of {sorted(REGISTRY)}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".mat":
        return load_mat(path)
    if suffix == ".hdr":
        return load_raster(_envi_data_file(path))
    if suffix in _RASTER_SUFFIXES:
        return load_raster(path)
    raise ValueError(f"{path}: unknown format {suffix!r}")

"""What the ``xr-inr`` commands do, as functions: open a cube file, compress it to Zarr, decode a
store to GeoTIFF / NetCDF / Zarr, describe a store, preview it as a PNG, catalogue it with STAC,
check a store's chunks and upgrade an old format 2 store's metadata (``verify`` and ``upgrade``
are :func:`xr_inr.verify` and :func:`xr_inr.upgrade`).

Each builds on the accessor (``.inr``) and :func:`xr_inr.open_zarr`; ``xr_inr.cli`` only parses
arguments and calls these.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .core.decode import architecture
from .xarray_zarr.accessor import find_band_dim
from .xarray_zarr.store import _KEEP_ENCODING, open_zarr, upgrade, verify  # noqa: F401  (xr-inr upgrade, verify)

DECODE_SUFFIXES = (".tif", ".tiff", ".nc", ".zarr")
NETCDF_ENGINE = "h5netcdf"
"""NetCDF-4 (HDF5): unlike NetCDF-3 it has unsigned integers, so a uint16 cube stays uint16."""


def pick_cube(ds: xr.Dataset, variable: Hashable | None = None) -> xr.DataArray:
    """The cube of ``ds``: ``variable`` when given, else its only 3-D variable with a band dimension."""
    if variable is not None:
        if variable not in ds.data_vars:
            raise KeyError(f"no variable {variable!r}; the data variables are {list(ds.data_vars)}")
        return ds[variable]
    names = ds.inr.cube_names()
    if len(names) != 1:
        which = f"several cubes {names}" if names else f"no 3-D cube with a band dimension in {list(ds.data_vars)}"
        raise ValueError(f"{which}: name one with --variable")
    return ds[names[0]]


def open_cube(path, variable: Hashable | None = None) -> xr.DataArray:
    """A hyperspectral cube from a file: Zarr, NetCDF, or what ``xr_inr.tools.datasets.load`` reads
    (GeoTIFF and ENVI with their CRS and wavelengths, the published ``.mat`` scenes, ``.npz``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return pick_cube(open_zarr(path), variable)
    if suffix in (".nc", ".nc4"):
        return pick_cube(xr.open_dataset(path, decode_coords="all", mask_and_scale=False), variable)
    from .tools.datasets import load

    return load(path)


def compress(src, store, bpppb: float | None = None, *, psnr: float | None = None, chunks=None,
             workers: int | None = None, scheduler: str | None = None, variable: Hashable | None = None,
             zarr_format: int = 3, overwrite: bool = False, progress: bool = True,
             **codec_options) -> xr.DataArray:
    """Compress the cube in ``src`` into the Zarr store ``store``; the compressed DataArray.

    bpppb : the rate of every chunk (default 0.05); or psnr : a quality target in dB for every chunk.
    workers : threads of the local Dask scheduler (default: one per core).
    scheduler : address of a running ``dask.distributed`` scheduler to fit on instead.
    codec_options : ``INRCodec`` options (``method``, ``steps``...).
    """
    import dask

    from .core.codec import INRCodec
    from .xarray_zarr.accessor import DEFAULT_BPPPB

    if bpppb is None and psnr is None:
        bpppb = DEFAULT_BPPPB
    INRCodec(bpppb=bpppb, psnr=psnr, **codec_options)  # bad options fail now, before the cube is read
    if Path(store).exists() and not overwrite:  # before the fits, not after
        raise FileExistsError(f"{store} exists (overwrite with --overwrite)")
    cube = open_cube(src, variable)
    if cube.name is None:
        cube = cube.rename("cube")
    with contextlib.ExitStack() as stack:
        client = None
        if scheduler:
            from distributed import Client

            client = stack.enter_context(Client(scheduler))
        elif workers:
            stack.enter_context(dask.config.set(num_workers=workers))
        return cube.inr.to_zarr(store, bpppb, psnr=psnr, chunks=chunks, mode="w" if overwrite else "w-",
                                zarr_format=zarr_format, progress=progress, scheduler=client, **codec_options)


def _plain(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every encoding but CF references dropped: written with the format's defaults."""
    ds = ds.copy()
    for variable in ds.variables.values():
        variable.encoding = {k: v for k, v in variable.encoding.items() if k in _KEEP_ENCODING}
    return ds


def decode(store, out, *, variable: Hashable | None = None, overwrite: bool = False) -> Path:
    """Decode the cube of ``store`` into ``out``: a GeoTIFF (``.tif``), NetCDF-4 (``.nc``) or plain Zarr
    (``.zarr``) file, keeping dtype, CRS, transform and the band coordinate (wavelengths)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in DECODE_SUFFIXES:
        raise ValueError(f"{out}: write {', '.join(DECODE_SUFFIXES)} (the suffix picks the format)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (overwrite with --overwrite)")
    cube = pick_cube(open_zarr(store), variable)
    if suffix in (".tif", ".tiff"):
        _write_geotiff(cube, out)
    elif suffix == ".nc":
        _plain(cube.to_dataset()).to_netcdf(out, engine=NETCDF_ENGINE)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            _plain(cube.to_dataset()).to_zarr(out, mode="w")
    return out


def _write_geotiff(cube: xr.DataArray, out: Path) -> None:
    """One GeoTIFF band per cube band; a band coordinate with units is written as each band's
    ``wavelength`` / ``wavelength_units`` metadata (the items GDAL gives ENVI bands)."""
    import rasterio
    import rioxarray  # noqa: F401  (registers .rio)

    band_dim = find_band_dim(cube)
    cube = cube.transpose(band_dim, cube.rio.y_dim, cube.rio.x_dim)
    cube.rio.to_raster(out)
    units = cube[band_dim].attrs.get("units") if band_dim in cube.coords else None
    if units:
        with rasterio.open(out, "r+") as raster:
            for index, value in enumerate(cube[band_dim].values, start=1):
                raster.update_tags(index, wavelength=str(value), wavelength_units=str(units))


def store_bytes(store) -> int:
    """Bytes of every file of a local store: chunks, metadata, coordinates."""
    return sum(path.stat().st_size for path in Path(store).rglob("*") if path.is_file())


def info(store) -> dict:
    """What a store holds: each cube's dims, shape, dtype, chunks, stored bytes and rates, and its
    chunks' methods and architectures (counted); the store's bytes and its rate over all cubes.
    A cube fitted to a PSNR target also gives the target, each chunk's PSNR and encodes (by chunk
    key "b.y.x"), and their ranges."""
    ds = open_zarr(store)
    cubes, elements = {}, 0
    for name, var in ds.data_vars.items():
        if not var.inr.is_compressed:
            continue
        by_index = var.inr.inspect_chunks()
        chunks = by_index.values()
        elements += var.size
        cubes[str(name)] = report = {
            "dims": [str(d) for d in var.dims], "shape": list(var.shape), "dtype": str(var.dtype),
            "chunk_shape": list(var.inr.chunk_shape), "chunks": len(chunks),
            "chunk_bytes": var.inr.nbytes, "chunk_bpppb": var.inr.bpppb,
            "methods": dict(Counter(c["method"] for c in chunks)),
            "architectures": dict(Counter(architecture(c) for c in chunks)),
            "chunk_bpppb_range": [min(c["bpppb"] for c in chunks), max(c["bpppb"] for c in chunks)],
        }
        target = next((c["psnr_target"] for c in chunks if "psnr_target" in c), None)
        if target is not None:
            achieved = {".".join(map(str, i)): c["psnr"] for i, c in by_index.items() if "psnr" in c}
            encodes = [c["encodes"] for c in chunks if "encodes" in c]
            report.update({"psnr_target": target, "chunk_psnr": achieved,
                           "chunk_psnr_range": [min(achieved.values()), max(achieved.values())] if achieved else None,
                           "chunk_encodes_range": [min(encodes), max(encodes)] if encodes else None})
    if not cubes:
        raise ValueError(f"{store}: no array stored with the xr_inr codec among {list(ds.data_vars)}")
    total = store_bytes(store)
    return {"store": str(store), "cubes": cubes, "store_bytes": total, "bpppb": 8 * total / elements}


def default_bands(n_bands: int) -> tuple[int, int, int]:
    """Three bands spread over the spectrum, long to short wavelengths (red, green, blue)."""
    return round(0.75 * (n_bands - 1)), round(0.5 * (n_bands - 1)), round(0.25 * (n_bands - 1))


def stretch(values: np.ndarray, percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """(y, x, band) values to uint8, each band stretched between its percentiles; NaN -> 0."""
    values = values.astype(np.float64)
    low, high = np.nanpercentile(values, percentiles, axis=(0, 1))
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    return np.nan_to_num(np.clip(scaled, 0, 1) * 255, nan=0.0).round().astype(np.uint8)


def preview(store, out, *, bands: Sequence[int] | None = None, scale: float = 0.5,
            variable: Hashable | None = None, percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """A false-colour PNG of three bands at ``scale`` times the stored resolution, the networks
    evaluated on that grid only (no full decode); each band stretched between its percentiles.
    Returns the (y, x, 3) uint8 image."""
    cube = pick_cube(open_zarr(store, scale=scale), variable)
    band_dim = find_band_dim(cube)
    n_bands = cube.sizes[band_dim]
    bands = tuple(bands) if bands is not None else default_bands(n_bands)
    if len(bands) != 3 or not all(0 <= b < n_bands for b in bands):
        raise ValueError(f"bands must be three band indices in 0..{n_bands - 1}, got {bands}")
    spatial = [d for d in cube.dims if d != band_dim]
    rgb = stretch(cube.isel({band_dim: list(bands)}).transpose(*spatial, band_dim).values, percentiles)
    write_png(out, rgb)
    return rgb


def write_png(path, rgb: np.ndarray) -> None:
    """An 8-bit RGB image (height, width, 3) as a PNG file."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, dtype=np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                           + chunk(b"IEND", b""))


def stac_item(store, *, href: str | None = None, item_id: str | None = None, datetime=None,
              variable: Hashable | None = None):
    """A pystac Item for the cube of ``store`` (see :func:`xr_inr.stac.item_for`); ``href``
    defaults to the store's absolute path."""
    import zarr

    cube = pick_cube(open_zarr(store), variable)
    zarr_format = zarr.open_group(store, mode="r").metadata.zarr_format
    return cube.inr.to_stac_item(href or str(Path(store).resolve()), item_id=item_id, datetime=datetime,
                                 zarr_format=zarr_format)

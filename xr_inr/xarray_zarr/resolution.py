"""Any-resolution decoding: evaluate the stored networks on a requested grid only.

Each chunk's network is a continuous function of (y, x), so a preview at a
quarter of the resolution evaluates a sixteenth of the pixels, and a few
points cost a few evaluations: no chunk is decoded whole. Positions are pixel
centres: output pixel j of a dimension scaled by ``s`` sits at input position
``(j + 0.5) / s - 0.5``, clamped to the array (the networks are not asked to
extrapolate). Coordinates follow linearly, and a ``GeoTransform`` attribute
(rioxarray's ``spatial_ref``) is rewritten to the new pixel size.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from .sources import ChunkSource, source_of


def scaled_positions(n: int, scale: float) -> np.ndarray:
    """Input pixel positions of the pixel centres of dimension ``n`` resized by ``scale``."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    n_out = max(1, round(n * scale))
    step = n / n_out
    return (np.arange(n_out) + 0.5) * step - 0.5


def _scales(obj: xr.DataArray, spatial: tuple[Hashable, Hashable], scale) -> dict[Hashable, float]:
    if isinstance(scale, Mapping):
        unknown = set(scale) - set(spatial)
        if unknown:
            raise ValueError(f"scale names {sorted(map(str, unknown))}, not spatial dimensions {spatial}")
        return {dim: float(scale.get(dim, 1.0)) for dim in spatial}
    return {dim: float(scale) for dim in spatial}


def _spatial_dims(obj: xr.DataArray, source: ChunkSource) -> tuple[Hashable, Hashable]:
    a1, a2 = source.spatial_axes
    return obj.dims[a1], obj.dims[a2]


def _coord_at(coord: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Values of a 1-D coordinate at fractional positions, linear (and linear beyond its ends)."""
    n = coord.size
    if n == 1 or coord.dtype.kind not in "iuf":
        return coord[np.clip(np.rint(positions), 0, n - 1).astype(int)]
    coord = coord.astype(np.float64)
    lower = np.clip(np.floor(positions), 0, n - 2).astype(int)
    frac = positions - lower
    return coord[lower] + frac * (coord[lower + 1] - coord[lower])


def _build(obj: xr.DataArray, data, positions: Mapping[Hashable, np.ndarray],
           values: Mapping[Hashable, np.ndarray]) -> xr.DataArray:
    """A DataArray like ``obj`` on new positions along some dims: new index coordinates,
    other coordinates on those dims dropped, GeoTransform updated."""
    coords = {}
    for name, coord in obj.coords.items():
        touched = set(coord.dims) & set(positions)
        if not touched:
            coords[name] = coord.variable
        elif name in positions and coord.dims == (name,):
            coords[name] = xr.Variable((name,), values[name], coord.attrs)
    out = xr.DataArray(data, dims=obj.dims, coords=coords, attrs=obj.attrs, name=obj.name)
    return _update_geotransform(out, obj, positions)


def _update_geotransform(out: xr.DataArray, original: xr.DataArray, positions) -> xr.DataArray:
    """Rewrite a GDAL ``GeoTransform`` attribute (north-up grids) for the new pixel spacing."""
    for name, coord in out.coords.items():
        text = coord.attrs.get("GeoTransform")
        if text is None:
            continue
        attrs = dict(coord.attrs)
        try:
            x0, dx, rx, y0, ry, dy = (float(v) for v in str(text).split())
        except ValueError:
            continue
        xdim, ydim = _xy_dims(original)
        if rx != 0 or ry != 0 or xdim is None:
            attrs.pop("GeoTransform")  # rotated or unknown axes: let readers recompute from coordinates
        else:
            if xdim in positions:
                x0, dx = _edge_and_step(x0, dx, positions[xdim])
            if ydim in positions:
                y0, dy = _edge_and_step(y0, dy, positions[ydim])
            attrs["GeoTransform"] = " ".join(repr(float(v)) for v in (x0, dx, rx, y0, ry, dy))
        variable = coord.variable.copy(deep=False)
        variable.attrs = attrs
        out = out.assign_coords({name: variable})
    return out


def _edge_and_step(origin: float, step: float, positions: np.ndarray) -> tuple[float, float]:
    """Edge and pixel size of a regular grid of positions (in input pixels) on an axis."""
    new_step = (positions[1] - positions[0]) if positions.size > 1 else 1.0
    first_centre = origin + (positions[0] + 0.5) * step
    return first_centre - new_step * step / 2, new_step * step


def _xy_dims(obj: xr.DataArray) -> tuple[Hashable | None, Hashable | None]:
    for x, y in (("x", "y"), ("lon", "lat"), ("longitude", "latitude")):
        if x in obj.dims and y in obj.dims:
            return x, y
    return None, None


def resample(obj: xr.DataArray, source: ChunkSource, scale) -> xr.DataArray:
    """``obj`` (backed by ``source``) resized by ``scale`` along its spatial dimensions, lazily."""
    spatial = _spatial_dims(obj, source)
    scales = _scales(obj, spatial, scale)
    positions = {dim: scaled_positions(obj.sizes[dim], s) for dim, s in scales.items()}
    return _evaluate(obj, source, positions)


def _evaluate(obj: xr.DataArray, source: ChunkSource, positions: Mapping[Hashable, np.ndarray]) -> xr.DataArray:
    values = {}
    clamped = {}
    for dim, pos in positions.items():
        n = obj.sizes[dim]
        clamped[dim] = np.clip(pos, 0, n - 1)
        coord = obj[dim].values if dim in obj.coords else np.arange(n)
        values[dim] = _coord_at(coord, pos)
    data = source.sample({obj.dims.index(dim): pos for dim, pos in clamped.items()})
    return _build(obj, data, positions, values)


def interp(obj: xr.DataArray, source: ChunkSource, coords: Mapping[Hashable, Any]) -> xr.DataArray:
    """``obj`` evaluated at coordinate values along its spatial dimensions (pixel index when
    a dimension has no coordinate), lazily; each position clamped to the array."""
    spatial = _spatial_dims(obj, source)
    unknown = set(coords) - set(spatial)
    if unknown:
        raise ValueError(f"interp takes the spatial dimensions {spatial}, not {sorted(map(str, unknown))}")
    positions = {}
    for dim, wanted in coords.items():
        wanted = np.atleast_1d(np.asarray(wanted, dtype=np.float64))
        n = obj.sizes[dim]
        if dim in obj.coords and n > 1:
            coord = obj[dim].values.astype(np.float64)
            if coord[-1] < coord[0]:
                positions[dim] = np.interp(wanted, coord[::-1], np.arange(n)[::-1].astype(np.float64))
            else:
                positions[dim] = np.interp(wanted, coord, np.arange(n, dtype=np.float64))
        else:
            positions[dim] = wanted
    out = _evaluate(obj, source, positions)
    return out.assign_coords({dim: (dim, np.atleast_1d(np.asarray(coords[dim])), obj[dim].attrs if dim in obj.coords
                                    else {}) for dim in coords})


def resample_dataset(ds: xr.Dataset, scale) -> xr.Dataset:
    """Every xr-inr cube of ``ds`` resized by ``scale``; other variables on the same spatial
    dimensions take the nearest pixel, the rest are kept."""
    cubes = {name: source_of(var.data) for name, var in ds.data_vars.items() if var.chunks is not None}
    cubes = {name: src for name, src in cubes.items() if src is not None}
    if not cubes:
        raise ValueError("no xr-inr cube in this dataset to resample (open it with xr_inr.open_zarr)")
    resized, positions = {}, {}
    for name, source in cubes.items():
        obj = ds[name]
        spatial = _spatial_dims(obj, source)
        for dim, s in _scales(obj, spatial, scale).items():
            pos = scaled_positions(obj.sizes[dim], s)
            if dim in positions and not np.array_equal(positions[dim], pos):
                raise ValueError(f"cubes disagree on the grid of {dim!r}")
            positions[dim] = pos
        resized[name] = resample(obj, source, scale)
    out_vars = {}
    for name, var in ds.data_vars.items():
        if name in resized:
            out_vars[name] = resized[name]
        elif set(var.dims) & set(positions):
            index = {d: np.clip(np.rint(p), 0, ds.sizes[d] - 1).astype(int) for d, p in positions.items()
                     if d in var.dims}
            out_vars[name] = var.isel(index).drop_vars([d for d in index if d in var.coords])
        else:
            out_vars[name] = var
    first = next(iter(resized.values()))
    coords = {name: c for name, c in first.coords.items()}
    for name, coord in ds.coords.items():
        if name not in coords and not set(coord.dims) & set(positions):
            coords[name] = coord
    return xr.Dataset(out_vars, coords=coords, attrs=ds.attrs)

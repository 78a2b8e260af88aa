"""Zarr stores of compressed cubes: writing fitted chunks as they are, reading them lazily.

Writing (:func:`write`) lets xarray lay out the store (metadata, coordinates,
attributes, CF conventions) with ``compute=False`` for the cubes, then puts
each chunk's stream at its chunk key: nothing is decoded or refitted. The
array metadata names the xr_inr codec (format 3: the ``xr_inr`` serializer;
format 2: the ``xr_inr`` numcodecs compressor), so any process with xr-inr
installed reads the store with plain ``xarray.open_zarr``.

Reading (:func:`open_zarr`) is ``xarray.open_zarr`` with georeferencing-
friendly defaults, plus any-resolution decoding (``scale=``).
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import xarray as xr
import zarr

from ..core.codec import INRCodec
from .sources import ChunkSource, StoredCube, inr_codec_of
from .zarr_codec import INRZarrCodec

_KEEP_ENCODING = ("grid_mapping", "coordinates")
"""Encoding kept on a cube variable: CF references to other variables. Everything else
(dtype, scale_factor, _FillValue...) is dropped, so the store holds the array as it is."""


_IDENTITY_SCALING = {"scale_factor": 1.0, "add_offset": 0.0}


def without_identity_scaling(attrs: Mapping) -> dict:
    """``attrs`` less a ``scale_factor`` of 1 and an ``add_offset`` of 0.

    rioxarray reports both for every raster; harmless as values, they still make
    CF readers (plain ``xr.open_zarr``) decode an integer cube to float64.
    """
    return {key: value for key, value in attrs.items()
            if not (key in _IDENTITY_SCALING and np.ndim(value) == 0 and value == _IDENTITY_SCALING[key])}


def _fill_for(source: ChunkSource):
    fill = source.fill_value
    if source.dtype.kind in "iu":
        return int(0 if math.isnan(fill) else fill)
    return float(fill)


def _cube_encoding(variable: xr.Variable, source: ChunkSource, zarr_format: int) -> dict:
    encoding = {k: v for k, v in variable.encoding.items() if k in _KEEP_ENCODING}
    config = dict(getattr(source, "config", {}))
    config["band_axis"] = source.band_axis
    config.pop("fill_value", None)
    encoding.update(filters=None, chunks=source.chunk_shape)
    if zarr_format == 3:
        encoding.update(serializer=INRZarrCodec(**config), compressors=None, fill_value=_fill_for(source))
    else:  # format 2: the fill value travels as _FillValue, set by the caller
        encoding.update(compressors=[INRCodec(**config, fill_value=source.fill_value)])
    return encoding


def write(ds: xr.Dataset, cubes: Mapping[Hashable, ChunkSource], store, *, group: str | None = None,
          mode: str = "w-", zarr_format: int = 3, consolidated: bool | None = None) -> None:
    """Write ``ds`` to ``store``; the variables in ``cubes`` as their stored streams."""
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if mode not in ("w", "w-"):
        raise ValueError(f"mode must be 'w' (overwrite) or 'w-' (fail if the store exists), got {mode!r}")
    names = list(cubes)
    cube_vars = ds[names]
    for name in names:
        variable = cube_vars.variables[name]
        source = cubes[name]
        if variable.shape != source.shape or variable.dtype != source.dtype:
            raise ValueError(f"{name!r}: the variable does not match its compressed chunks")
        variable = variable.copy(deep=False)
        variable.attrs = without_identity_scaling(variable.attrs)
        variable.encoding = _cube_encoding(variable, source, zarr_format)
        cube_vars[name] = variable
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        # 1. everything but the cubes (coordinates, other variables, attributes), written as usual
        ds.drop_vars(names).to_zarr(store, group=group, mode=mode, zarr_format=zarr_format, consolidated=False)
        # 2. the cubes' metadata only (compute=False), next to what step 1 wrote
        cube_vars.to_zarr(store, group=group, mode="a", zarr_format=zarr_format, consolidated=consolidated,
                          compute=False)
    # 3. the streams, at their chunk keys
    zgroup = zarr.open_group(store, path=group or "", mode="r+", zarr_format=zarr_format)
    for name in names:
        array = zgroup[str(name)]
        source = cubes[name]
        if tuple(array.chunks) != source.chunk_shape or inr_codec_of(array) is None:
            raise RuntimeError(f"{name!r} was laid out with chunks {array.chunks}, not {source.chunk_shape}")
        _put_streams(array, source)


def _put_streams(array, source: ChunkSource) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    prototype = default_buffer_prototype()

    async def put_all():
        writes = []
        for index in np.ndindex(*source.grid_shape):
            stream = source.stream(index)
            if stream is None:
                continue
            path = array.store_path / array.metadata.encode_chunk_key(tuple(int(i) for i in index))
            writes.append(path.set(prototype.buffer.from_bytes(stream)))
        await asyncio.gather(*writes)

    sync(put_all())


def open_zarr(store, *, scale: float | Mapping[Hashable, float] | None = None, group: str | None = None,
              decode_coords: str | bool = "all", mask_and_scale: bool = False, **kwargs) -> xr.Dataset:
    """Open a store lazily, its xr-inr cubes decoded chunk by chunk when read.

    ``xarray.open_zarr`` with two different defaults: ``decode_coords="all"``
    (the CRS comes back as a coordinate) and ``mask_and_scale=False`` (an
    integer cube stays integer; its ``_FillValue`` stays an attribute).

    scale : evaluate the networks on a coarser (or finer) grid instead of
        decoding chunks: 0.25 gives a quarter-size preview, without decoding
        any chunk whole (see ``DataArray.inr.resample``).

    The cubes' arrays support ``.inr.resample``, ``.inr.interp``,
    ``.inr.nbytes`` and ``.inr.bpppb``.
    """
    ds = xr.open_zarr(store, group=group, decode_coords=decode_coords, mask_and_scale=False, **kwargs)
    zgroup = zarr.open_group(store, path=group or "", mode="r")
    for name in list(ds.data_vars):
        try:
            array = zgroup[str(name)]
        except KeyError:
            continue
        if not isinstance(array, zarr.Array) or inr_codec_of(array) is None:
            continue
        variable = ds.variables[name]
        source = StoredCube(array)
        if variable.shape != source.shape or variable.dtype != source.dtype:
            continue
        ds[name] = variable.copy(deep=False, data=source.lazy())
    if scale is not None:
        from .resolution import resample_dataset

        ds = resample_dataset(ds, scale)
    if mask_and_scale:
        ds = xr.decode_cf(ds, mask_and_scale=True, decode_times=False, decode_coords=False,
                          decode_timedelta=False, concat_characters=False)
    return ds

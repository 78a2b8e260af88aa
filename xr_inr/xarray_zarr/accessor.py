"""``DataArray.inr`` and ``Dataset.inr``: compress cubes chunk by chunk, store them in Zarr.

``import xr_inr`` registers both accessors (as soon as xarray is imported).
This module imports xarray only: dask, zarr and torch are imported by the
functions that need them. See docs/zarr.md for a tour.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..core.codec import INRCodec
from ..core.stream import DTYPE_CODES

if TYPE_CHECKING:
    from .sources import ChunkSource

BAND_DIM_NAMES = ("band", "bands", "wavelength", "wavelengths", "spectral", "spectrum", "spectra",
                  "channel", "channels", "lambda", "wl", "wavenumber", "frequency")
"""Dimension names taken as the band dimension (case-insensitive)."""

DEFAULT_BPPPB = 0.05
"""The rate of ``.inr.compress`` when neither ``bpppb`` nor ``psnr`` is given."""

DEFAULT_SPATIAL_CHUNK = 128
"""Default chunk side along the two spatial dimensions: big enough for a network to pay
off at low rates, small enough to fit one chunk in seconds to minutes on a CPU core."""

DATAARRAY_VARIABLE = "__xarray_dataarray_variable__"
"""Variable name of an unnamed DataArray in a store (as xarray's own ``DataArray.to_zarr``)."""

_ZARR_ENCODINGS = ("chunks", "preferred_chunks", "compressors", "compressor", "filters", "serializer",
                   "shards", "fill_value", "write_empty_chunks", "chunk_key_encoding")


class BandDimError(ValueError):
    """The band dimension of an array could not be found (pass ``band_dim=``)."""


def find_band_dim(obj: xr.DataArray, band_dim: Hashable | None = None) -> Hashable:
    """The band dimension of ``obj``: ``band_dim`` when given, else the one dimension named like bands."""
    dims = tuple(obj.dims)
    if band_dim is not None:
        if band_dim not in dims:
            raise BandDimError(f"band_dim {band_dim!r} is not a dimension of this array; its dims are {dims}")
        return band_dim
    named = [d for d in dims if str(d).lower() in BAND_DIM_NAMES]
    if not named:  # e.g. "spectral_band", "Wavelength_nm"
        named = [d for d in dims if any(word in str(d).lower() for word in ("band", "wavelength", "spectr"))]
    if len(named) == 1:
        return named[0]
    which = "several dimensions look like bands: " + repr(named) if named else "no dimension is named like bands"
    raise BandDimError(
        f"cannot tell the band dimension of an array with dims {dims}: {which} "
        f"(known names: {', '.join(BAND_DIM_NAMES)}); pass band_dim="
    )


def _check_cube(obj: xr.DataArray, band_dim: Hashable) -> int:
    if obj.ndim != 3:
        raise ValueError(
            f"xr-inr compresses 3-D cubes (bands and two spatial dimensions); {obj.name!r} has dims {obj.dims}"
        )
    if obj.dtype.newbyteorder("=") not in DTYPE_CODES:  # big-endian data is converted to native order
        supported = ", ".join(str(d) for d in DTYPE_CODES)
        raise TypeError(f"unsupported dtype {obj.dtype} for {obj.name!r}; supported: {supported} (cast first)")
    if obj.size == 0:
        raise ValueError(f"{obj.name!r} is empty (shape {dict(obj.sizes)}): nothing to compress")
    return obj.dims.index(band_dim)


def chunk_shape_for(obj: xr.DataArray, band_axis: int, chunks=None) -> tuple[int, ...]:
    """The regular chunk shape to fit on.

    ``chunks``: None keeps the chunks of dask-backed data (its first chunk
    along each dimension sets the grid) and uses the default otherwise;
    ``"default"``: every band in one chunk, at most ``DEFAULT_SPATIAL_CHUNK``
    pixels along each spatial dimension, evened out so that edge chunks are
    not slivers (300 pixels: chunks of 100); an int: that spatial side, all bands; a
    mapping {dim: size} (-1 or None: the whole dimension) or a 3-tuple.
    """
    shape = obj.shape
    # as many chunks as DEFAULT_SPATIAL_CHUNK needs, evened out: no sliver at the edge
    default = [math.ceil(n / math.ceil(n / DEFAULT_SPATIAL_CHUNK)) for n in shape]
    default[band_axis] = shape[band_axis]
    if chunks is None:
        sizes = [c[0] for c in obj.chunks] if obj.chunks is not None else default
    elif isinstance(chunks, str):
        if chunks not in ("default", "auto"):
            raise ValueError(f"unknown chunks {chunks!r}: use 'default', an int, a mapping or a tuple")
        sizes = default
    elif isinstance(chunks, int):
        sizes = [chunks] * 3
        sizes[band_axis] = shape[band_axis]
    elif isinstance(chunks, Mapping):
        unknown = set(chunks) - set(obj.dims)
        if unknown:
            raise ValueError(f"chunks names {sorted(map(str, unknown))}, not dimensions of {obj.dims}")
        sizes = [chunks.get(dim, default[axis]) for axis, dim in enumerate(obj.dims)]
    else:
        sizes = list(chunks)
        if len(sizes) != 3:
            raise ValueError(f"chunks needs one size per dimension of {obj.dims}, got {chunks!r}")
    result = []
    for size, n, dim in zip(sizes, shape, obj.dims, strict=True):
        size = n if size is None or size == -1 else int(size)
        if size < 1:
            raise ValueError(f"chunk size along {dim!r} must be >= 1, got {size}")
        result.append(min(size, n))
    return tuple(result)


def _nodata_of(obj: xr.DataArray, nodata) -> tuple[float, bool]:
    """(fill value, whether elements equal to it are nodata to mask) for ``obj``."""
    if nodata is None:  # declared by the data: CF _FillValue / missing_value, in attrs or encoding
        for source in (obj.attrs, obj.encoding):
            for key in ("_FillValue", "missing_value"):
                if source.get(key) is not None:
                    nodata = source[key]
                    break
            if nodata is not None:
                break
    if nodata is None or nodata is False:
        return (math.nan if obj.dtype.kind == "f" else 0.0), False
    value = float(np.asarray(nodata).item())
    if math.isnan(value):
        if obj.dtype.kind != "f":
            raise ValueError(f"nodata NaN cannot mark {obj.dtype} data")
        return value, False  # NaN is always left out of the fit
    if obj.dtype.kind in "iu":
        info = np.iinfo(obj.dtype)
        if not (value == int(value) and info.min <= value <= info.max):
            raise ValueError(f"nodata {nodata!r} is not a {obj.dtype} value")
    return value, True


@dataclass
class FitJob:
    """The planned fits of one cube: its chunk grid and codec settings, one delayed fit per chunk."""

    name: Hashable
    obj: xr.DataArray
    data: Any
    """The cube as a dask array on the regular chunk grid (native byte order)."""
    chunk_shape: tuple[int, ...]
    band_axis: int
    fill_value: float
    nodata: bool
    config: dict
    torch_threads: int | None
    fit_batch: int
    """Chunks fitted together in one task (:func:`parallel.batch_size`)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.obj.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.obj.dtype.newbyteorder("=")

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.data.numblocks)

    def fit_tasks(self, groups: list[list[tuple[int, ...]]]) -> list:
        """One delayed fit per group of chunk indices (:func:`parallel.fit_task`)."""
        from . import parallel

        return parallel.fit_delayed(self.data, self.chunk_shape, self.fill_value, self.nodata, self.config,
                                    self.torch_threads, groups)


def plan_fits(arrays: Mapping[Hashable, xr.DataArray], bpppb: float | None, *, psnr: float | None = None,
              band_dim=None, chunks=None, nodata=None, torch_threads: int | None = 1, fit_batch: int | None = None,
              **codec_options) -> list[FitJob]:
    """Check every array and plan its fits (nothing is computed); ``bpppb`` or ``psnr``."""
    import dask.array as dsa

    from . import parallel

    jobs = []
    for name, obj in arrays.items():
        dim = find_band_dim(obj, band_dim)
        band_axis = _check_cube(obj, dim)
        chunk_shape = chunk_shape_for(obj, band_axis, chunks)
        fill, mask_nodata = _nodata_of(obj, nodata)
        codec = INRCodec(bpppb=bpppb, psnr=psnr, band_axis=band_axis, **codec_options)
        config = codec.get_config()
        config.pop("id")
        data = obj.data if obj.dtype.isnative else obj.data.astype(obj.dtype.newbyteorder("="))
        if isinstance(data, dsa.Array):
            if tuple(c[0] for c in data.chunks) != chunk_shape or not _regular(data.chunks, chunk_shape):
                data = data.rechunk(chunk_shape)
        else:
            data = dsa.from_array(np.asarray(data), chunks=chunk_shape)
        jobs.append(FitJob(name, obj, data, chunk_shape, band_axis, fill, mask_nodata, config, torch_threads,
                           parallel.batch_size(config, fit_batch)))
    return jobs


def run_fits(jobs: list[FitJob], *, scheduler=None, progress: bool = True, stored=None, stored_quality=None,
             on_stream=None) -> dict[Hashable, xr.DataArray]:
    """Run the planned fits in one parallel computation; the compressed arrays by name.

    stored : {name: {chunk index: stream}} already fitted (a resumed write): not refitted.
    stored_quality : {name: {chunk index: quality}} of those (with a PSNR target).
    on_stream : called as ``on_stream(name, index, stream, quality)`` as each fit finishes
        (quality: None at a fixed rate, else what the chunk achieved, see :func:`parallel.fit_task`).
    """
    from . import parallel
    from .sources import CompressedCube

    streams = {job.name: dict((stored or {}).get(job.name, {})) for job in jobs}
    quality = {job.name: {i: q for i, q in (stored_quality or {}).get(job.name, {}).items()
                          if i in streams[job.name]} for job in jobs}
    todo, tasks = [], []  # (name, chunk indices) and the task fitting them, per task
    for job in jobs:
        pending = [index for index in np.ndindex(*job.grid_shape) if index not in streams[job.name]]
        groups = [pending[i:i + job.fit_batch] for i in range(0, len(pending), job.fit_batch)]
        todo += [(job.name, group) for group in groups]
        tasks += job.fit_tasks(groups)

    def finished(position, results):
        name, group = todo[position]
        for index, (stream, achieved, caught) in zip(group, results, strict=True):
            for category, message in caught:  # issued here: a worker's own warnings never reach the user
                where = f"chunk {index}" if name is None else f"{name!s} chunk {index}"
                warnings.warn(f"{where}: {message}", category, stacklevel=2)
            streams[name][index] = stream
            if achieved is not None:
                quality[name][index] = achieved
            if on_stream is not None:
                on_stream(name, index, stream, achieved)

    chunks = sum(len(group) for _, group in todo)
    parallel.run(tasks, chunks, scheduler=scheduler, progress=progress, desc=f"xr-inr fit ({chunks} chunks)",
                 on_result=finished, blas_threads=jobs[0].torch_threads if jobs else None)
    result = {}
    for job in jobs:
        cube = CompressedCube(streams[job.name], job.shape, job.chunk_shape, job.dtype, job.band_axis,
                              job.fill_value, job.config, job.nodata, quality=quality[job.name])
        out = job.obj.copy(deep=False, data=cube.lazy())
        out.encoding = {k: v for k, v in job.obj.encoding.items() if k not in _ZARR_ENCODINGS}
        result[job.name] = out
    return result


def compress_dataarrays(arrays: Mapping[Hashable, xr.DataArray], bpppb: float | None = None, *,
                        psnr: float | None = None, band_dim=None, chunks=None, nodata=None, progress: bool = True,
                        scheduler=None, torch_threads: int | None = 1, fit_batch: int | None = None,
                        **codec_options) -> dict[Hashable, xr.DataArray]:
    """Fit every chunk of every array in one parallel computation; the compressed arrays by name.
    ``bpppb`` or ``psnr`` (neither: :data:`DEFAULT_BPPPB`)."""
    if bpppb is None and psnr is None:
        bpppb = DEFAULT_BPPPB
    jobs = plan_fits(arrays, bpppb, psnr=psnr, band_dim=band_dim, chunks=chunks, nodata=nodata,
                     torch_threads=torch_threads, fit_batch=fit_batch, **codec_options)
    return run_fits(jobs, scheduler=scheduler, progress=progress)


def _regular(chunks: tuple[tuple[int, ...], ...], chunk_shape: tuple[int, ...]) -> bool:
    return all(all(c == size for c in sizes[:-1]) and sizes[-1] <= size
               for sizes, size in zip(chunks, chunk_shape, strict=True))


def _source(obj: xr.DataArray) -> ChunkSource:
    from .sources import source_of

    source = source_of(obj.data) if obj.chunks is not None else None  # .data of others would load them
    if source is None:
        raise ValueError(
            "this array does not hold xr-inr chunks: use the result of .inr.compress() or an array "
            "opened with xr_inr.open_zarr() (before any indexing or arithmetic)"
        )
    return source


@xr.register_dataarray_accessor("inr")
class INRDataArrayAccessor:
    """``da.inr``: compress a hyperspectral cube with INRs and store it in Zarr."""

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    @property
    def band_dim(self) -> Hashable:
        """The band dimension, found by name (see :data:`BAND_DIM_NAMES`)."""
        return find_band_dim(self._obj)

    def compress(self, bpppb: float | None = None, *, psnr: float | None = None, band_dim: Hashable | None = None,
                 chunks=None, nodata=None, progress: bool = True, scheduler=None, torch_threads: int | None = 1,
                 fit_batch: int | None = None, **codec_options) -> xr.DataArray:
        """Fit one network per chunk, in parallel with Dask; the result decodes lazily.

        bpppb : bit budget per pixel per band of every chunk (stored bytes over
            the chunk's elements inside the array); default 0.05 when ``psnr``
            is not given.
        psnr : a quality target in dB instead: each chunk gets the smallest
            stream found whose PSNR over the chunk (R = max - min of its valid
            values) meets it, searching the rate with several fits per chunk
            (:mod:`xr_inr.core.quality`); ``.inr.inspect_chunks()`` gives each
            chunk's PSNR. Give ``bpppb`` or ``psnr``, not both.
        band_dim : the band dimension, when its name is not a known one.
        chunks : the chunk grid (see :func:`chunk_shape_for`); default: all
            bands in one chunk, ``DEFAULT_SPATIAL_CHUNK`` pixels squared, or the
            chunks of dask-backed data.
        nodata : value marking missing elements, left out of the fits and
            restored exactly; default: the ``_FillValue`` (or ``missing_value``)
            of the array, False for none. NaN is always treated as missing.
        progress : show a per-chunk progress bar (tqdm); False for quiet.
        scheduler : a Dask scheduler name or a ``distributed.Client``; default:
            the client the user has open, else the threaded scheduler.
        torch_threads : threads of torch, and of numpy's BLAS, in each fit task (None: leave as is).
        fit_batch : chunks fitted together in one task, as one batch (method
            "grid" at a fixed rate; chunks of the same architecture share a
            batch); default: 16 when the fits run on CUDA (``device`` None with
            a GPU present, or "cuda"), else 1.
        codec_options : :class:`xr_inr.INRCodec` options (steps, depth, lr, ...).

        Returns a DataArray with the same dims, coords and attrs; ``.inr.nbytes``
        and ``.inr.bpppb`` give its stored size, ``.inr.to_zarr`` stores it.
        """
        name = self._obj.name
        return compress_dataarrays({name: self._obj}, bpppb, psnr=psnr, band_dim=band_dim, chunks=chunks,
                                   nodata=nodata, progress=progress, scheduler=scheduler, torch_threads=torch_threads,
                                   fit_batch=fit_batch, **codec_options)[name]

    @property
    def is_compressed(self) -> bool:
        """Whether this array holds xr-inr chunks (compressed here or opened from a store)."""
        try:
            _source(self._obj)
        except ValueError:
            return False
        return True

    @property
    def nbytes(self) -> int:
        """Stored bytes of all chunks (headers, masks and checksums included)."""
        return _source(self._obj).nbytes

    @property
    def bpppb(self) -> float:
        """Stored bits per pixel per band: 8 × nbytes over the array's element count."""
        return _source(self._obj).bpppb

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """The chunk grid the networks were fitted on."""
        return _source(self._obj).chunk_shape

    def inspect_chunks(self) -> dict[tuple[int, ...], dict]:
        """:func:`xr_inr.inspect` of every stored chunk (method, architecture, bytes), by chunk index;
        compressed with a PSNR target, also ``psnr_target``, the chunk's ``psnr`` and its ``encodes``."""
        return _source(self._obj).inspect_chunks()

    def to_zarr(self, store, bpppb: float | None = None, *, psnr: float | None = None, group: str | None = None,
                mode: str = "w-",
                zarr_format: int = 3, consolidated: bool | None = None, band_dim: Hashable | None = None,
                chunks=None, nodata=None, progress: bool = True, scheduler=None, torch_threads: int | None = 1,
                fit_batch: int | None = None, **codec_options) -> xr.DataArray:
        """Write the cube to a Zarr store with the xr_inr codec; returns the compressed DataArray.

        A compressed array (from :meth:`compress`) is written as it is, without
        refitting; any other array is compressed first at ``bpppb``, or to the
        quality target ``psnr`` (see :meth:`compress`). Format 3
        (default) uses the ``xr_inr`` serializer, format 2 the numcodecs codec.
        """
        from .store import write

        obj = self._obj
        name = obj.name if obj.name is not None else DATAARRAY_VARIABLE
        options = dict(group=group, mode=mode, zarr_format=zarr_format, consolidated=consolidated,
                       scheduler=scheduler, progress=progress)
        if self.is_compressed:
            _check_no_refit(_source(obj), bpppb, chunks, nodata, {**codec_options, "psnr": psnr})
            write(obj.to_dataset(name=name), {name: _source(obj)}, store, **options)
            return obj
        if bpppb is None and psnr is None:
            raise ValueError("pass bpppb= or psnr= (or compress the array first with .inr.compress)")
        jobs = plan_fits({name: obj}, bpppb, psnr=psnr, band_dim=band_dim, chunks=chunks, nodata=nodata,
                         torch_threads=torch_threads, fit_batch=fit_batch, **codec_options)
        return write(obj.to_dataset(name=name), {name: jobs[0]}, store, **options)[name]

    def to_stac_item(self, href: str, *, item_id: str | None = None, datetime=None, zarr_format: int = 3):
        """A pystac Item for this compressed cube stored at ``href``: asset, datacube and projection
        extensions, codec fields (``inr:``). See :func:`xr_inr.stac.item_for`; needs the geo extra."""
        from ..stac import item_for

        return item_for(self._obj, href, item_id=item_id, datetime=datetime, zarr_format=zarr_format)

    def resample(self, scale: float | Mapping[Hashable, float]) -> xr.DataArray:
        """The cube at another resolution, evaluating the networks on the new grid only (lazy).

        ``scale`` multiplies the size of both spatial dimensions (0.25: a
        quarter-size preview; 2: twice as many pixels), or maps a spatial
        dimension to its own factor. Coordinates follow (pixel centres).
        """
        from .resolution import resample

        return resample(self._obj, _source(self._obj), scale)

    def interp(self, **coords: Any) -> xr.DataArray:
        """The cube at chosen coordinate values along its spatial dimensions (lazy), e.g. ``y=..., x=...``.

        Like ``DataArray.interp`` but evaluating the networks at those points
        instead of interpolating decoded pixels; values outside the array are
        clamped to its edge.
        """
        from .resolution import interp

        return interp(self._obj, _source(self._obj), coords)


def _check_no_refit(source: ChunkSource, bpppb, chunks, nodata, codec_options) -> None:
    asked = {k: v for k, v in codec_options.items() if not (k == "psnr" and v is None)}
    if bpppb is not None:
        asked["bpppb"] = bpppb
    config = getattr(source, "config", None)
    if config is None:
        changed = sorted(asked)
    else:
        changed = sorted(k for k, v in asked.items() if config.get(k) != v)
    if changed or chunks is not None or nodata is not None:
        raise ValueError(
            "this array is already compressed; its chunks are written as they are. To change "
            f"{changed or 'the chunks or nodata'}, compress the original array again."
        )


@xr.register_dataset_accessor("inr")
class INRDatasetAccessor:
    """``ds.inr``: the DataArray accessor applied to every cube of a Dataset."""

    def __init__(self, obj: xr.Dataset):
        self._obj = obj

    def cube_names(self, band_dim: Hashable | None = None) -> list[Hashable]:
        """Data variables that are 3-D cubes with a band dimension and a supported dtype."""
        names = []
        for name, var in self._obj.data_vars.items():
            if var.ndim != 3 or var.dtype.newbyteorder("=") not in DTYPE_CODES:
                continue
            try:
                find_band_dim(var, band_dim)
            except BandDimError:
                continue
            names.append(name)
        return names

    def _names(self, variables: Iterable[Hashable] | None, band_dim) -> list[Hashable]:
        if variables is None:
            names = self.cube_names(band_dim)
            if not names:
                raise ValueError(f"no 3-D cube with a band dimension among {list(self._obj.data_vars)}")
            return names
        names = list(variables)
        missing = [n for n in names if n not in self._obj.data_vars]
        if missing:
            raise KeyError(f"no data variables {missing}")
        return names

    def compress(self, bpppb: float | None = None, *, psnr: float | None = None,
                 variables: Iterable[Hashable] | None = None, band_dim: Hashable | None = None,
                 **options) -> xr.Dataset:
        """Compress the cubes (default: every data variable that is one), all chunks in one parallel run;
        at ``bpppb`` (default 0.05) or to the quality target ``psnr`` (see ``DataArray.inr.compress``)."""
        names = self._names(variables, band_dim)
        todo = {n: self._obj[n] for n in names if not self._obj[n].inr.is_compressed}
        done = compress_dataarrays(todo, bpppb, psnr=psnr, band_dim=band_dim, **options) if todo else {}
        out = self._obj.copy()
        for name, value in done.items():
            out[name] = value
        return out

    @property
    def nbytes(self) -> int:
        """Stored bytes of the compressed cubes."""
        return sum(self._obj[n].inr.nbytes for n in self._obj.data_vars if self._obj[n].inr.is_compressed)

    def to_zarr(self, store, bpppb: float | None = None, *, psnr: float | None = None,
                variables: Iterable[Hashable] | None = None, group: str | None = None, mode: str = "w-",
                zarr_format: int = 3,
                consolidated: bool | None = None, band_dim: Hashable | None = None, **options) -> xr.Dataset:
        """Write the Dataset; its cubes with the xr_inr codec (compressed first when needed, at ``bpppb`` or
        to the quality target ``psnr``), the rest as usual."""
        names = self._names(variables, band_dim)
        pending = [n for n in names if not self._obj[n].inr.is_compressed]
        if pending and bpppb is None and psnr is None:
            raise ValueError(f"pass bpppb= or psnr= to compress {pending}, or compress them first")
        for name in names:
            if name not in pending:
                _check_no_refit(_source(self._obj[name]), bpppb, options.get("chunks"), options.get("nodata"),
                                {**{k: v for k, v in options.items() if k not in _RUN_OPTIONS}, "psnr": psnr})
        run = {k: options.pop(k) for k in ("progress", "scheduler") if k in options}
        jobs = plan_fits({n: self._obj[n] for n in pending}, bpppb, psnr=psnr, band_dim=band_dim,
                         **options) if pending else []
        cubes = {job.name: job for job in jobs}
        cubes.update({n: _source(self._obj[n]) for n in names if n not in pending})
        from .store import write

        fitted = write(self._obj, cubes, store, group=group, mode=mode, zarr_format=zarr_format,
                       consolidated=consolidated, **run)
        out = self._obj.copy()
        for name, value in fitted.items():
            out[name] = value
        return out

    def resample(self, scale: float | Mapping[Hashable, float]) -> xr.Dataset:
        """Every compressed cube at another resolution (see ``DataArray.inr.resample``); other
        variables on the same spatial dimensions take the nearest pixel."""
        from .resolution import resample_dataset

        return resample_dataset(self._obj, scale)


_RUN_OPTIONS = ("chunks", "nodata", "progress", "scheduler", "torch_threads", "fit_batch")

"""Zarr stores of compressed cubes: writing fitted chunks as they are, reading them lazily.

Writing (:func:`write`) lets xarray lay out the store (metadata, coordinates,
attributes, CF conventions) with ``compute=False`` for the cubes, then puts
each chunk's stream at its chunk key: nothing is decoded or refitted. The
array metadata names the xr_inr codec (format 3: the ``xr_inr`` serializer;
format 2: the ``xr_inr`` numcodecs compressor), so any process with xr-inr
installed reads the store with plain ``xarray.open_zarr``.

Reading (:func:`open_zarr`) is ``xarray.open_zarr`` with georeferencing-
friendly defaults, plus any-resolution decoding (``scale=``). :func:`verify`
checks every chunk; :func:`upgrade` records the chunk layout in the metadata
of format 2 stores written before it was stored there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
import zarr

from ..core.codec import INRCodec
from ..core.decode import check_layout
from ..core.stream import StreamError
from .accessor import FitJob, run_fits
from .sources import (MANIFEST_ATTR, QUALITY_ATTR, ChunkError, ChunkSource, StoredCube, _ChunkRef, _decoded,
                      chunk_digest, inr_codec_of, manifest_key, read_quality)
from .zarr_codec import INRZarrCodec

_KEEP_ENCODING = ("grid_mapping", "coordinates")
"""Encoding kept on a cube variable: CF references to other variables. Everything else
(dtype, scale_factor, _FillValue...) is dropped, so the store holds the array as it is."""


STATE_ATTR = "xr_inr_write"
"""Group attribute: ``{"state": "writing" | "complete", "fingerprint": ...}`` of the write."""

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
    for key in ("fill_value", "chunk_shape", "dtype"):  # the target array's, set below
        config.pop(key, None)
    encoding.update(filters=None, chunks=source.chunk_shape)
    if zarr_format == 3:
        encoding.update(serializer=INRZarrCodec(**config), compressors=None, fill_value=_fill_for(source))
    else:  # format 2: the fill value travels as _FillValue, set by the caller
        encoding.update(compressors=[INRCodec(**config, fill_value=source.fill_value, chunk_shape=source.chunk_shape,
                                              dtype=str(source.dtype))])  # the compressor gets no chunk spec
    return encoding


def write(ds: xr.Dataset, cubes: Mapping[Hashable, ChunkSource | FitJob], store, *, group: str | None = None,
          mode: str = "w-", zarr_format: int = 3, consolidated: bool | None = None, scheduler=None,
          progress: bool = True) -> dict[Hashable, xr.DataArray]:
    """Write ``ds`` to ``store``: the variables in ``cubes`` as their streams, each put as it is fitted.

    ``cubes`` maps a variable to its compressed chunks (a :class:`ChunkSource`)
    or to its planned fits (a :class:`FitJob`, run here). Returns the fitted
    cubes as compressed DataArrays. The store is written beside the target
    (:func:`_staging`) and put in its place once complete (a local directory
    renamed, others copied over it), so readers see the old store or the new
    one; an interrupted write is resumed by the same call (see
    docs/reliability.md).
    """
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if mode not in ("w", "w-"):
        raise ValueError(f"mode must be 'w' (overwrite) or 'w-' (fail if the store exists), got {mode!r}")
    for name, cube in cubes.items():
        variable = ds.variables[name]
        if variable.shape != cube.shape or variable.dtype.newbyteorder("=") != cube.dtype:
            raise ValueError(f"{name!r}: the variable does not match its compressed chunks")
    fingerprint = _fingerprint(ds, cubes, scheduler)
    staging = _staging(store, group)
    if staging is not None and mode == "w-" and _exists(store, group):
        raise FileExistsError(f"{_describe(store, group)} exists (mode='w-'); pass mode='w' to replace it")
    where, group_at = (store, group) if staging is None else (staging.store, staging.group)
    stored = _stored_streams(where, group_at, zarr_format, fingerprint, cubes, finished=staging is not None)
    if stored is None:  # nothing to resume: lay the store out afresh
        keys = {} if staging is None or staging.renamed else _disjoint_chunk_keys(store, group, ds, zarr_format)
        _layout(ds, cubes, where, group=group_at, mode=mode if staging is None else "w", zarr_format=zarr_format,
                fingerprint=fingerprint, chunk_keys=keys)
        stored = {name: {} for name in cubes}
    zgroup = zarr.open_group(where, path=group_at or "", mode="r+", zarr_format=zarr_format)
    arrays = {name: zgroup[str(name)] for name in cubes}
    written = {name: dict(streams) for name, streams in stored.items()}
    quality = {name: {i: q for i, q in read_quality(arrays[name].attrs.get(QUALITY_ATTR)).items() if i in written[name]}
               for name in cubes}

    def put(name, index, stream, achieved=None):
        _put_stream(arrays[name], index, stream)
        written[name][index] = stream
        if achieved is not None:  # recorded as it comes: a resumed write keeps what the stored chunks achieved
            quality[name][index] = achieved
            arrays[name].attrs[QUALITY_ATTR] = _quality_attr(quality[name])

    for name, cube in cubes.items():
        if isinstance(cube, ChunkSource):
            for index in np.ndindex(*cube.grid_shape):
                if index not in written[name]:
                    put(name, index, cube.stream(index))
                    if index in cube.quality:
                        quality[name][index] = cube.quality[index]
    jobs = [cube for cube in cubes.values() if isinstance(cube, FitJob)]
    fitted = run_fits(jobs, scheduler=scheduler, progress=progress, stored=stored, stored_quality=quality,
                      on_stream=put) if jobs else {}
    for name, array in arrays.items():  # what was written, for readers and xr_inr.verify
        if quality[name]:
            array.attrs[QUALITY_ATTR] = _quality_attr(quality[name])
        array.attrs[MANIFEST_ATTR] = {manifest_key(i): [len(b), chunk_digest(b)]
                                     for i, b in sorted(written[name].items())}
    zgroup.attrs[STATE_ATTR] = {"state": "complete", "fingerprint": fingerprint}
    consolidate = consolidated or (consolidated is None and zgroup.store.supports_consolidated_metadata)
    if consolidate:
        _consolidate(where, group_at, zarr_format)
    if staging is not None:
        _put_in_place(staging, store, group, zarr_format, consolidate_root=consolidate and bool(group))
    return fitted


def _consolidate(store, group, zarr_format) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store, path=group or "", zarr_format=zarr_format)


def _quality_attr(quality: Mapping) -> dict:
    return {manifest_key(i): q for i, q in sorted(quality.items())}


def _fingerprint(ds: xr.Dataset, cubes: Mapping[Hashable, ChunkSource | FitJob], scheduler=None) -> str:
    """What a write stores, as a digest: the other variables, coordinates and attributes, and the
    cubes' layout, settings and input data (or streams).

    The rest of the dataset enters as dask's deterministic token (values of numpy data, the graph
    of dask data); where dask has none, the digest is random: such a write is never resumed. The
    input data is hashed chunk by chunk by tasks on the scheduler the fits will use (a cluster's
    workers read their chunks): only the 32-byte digests come back, never the cube.
    """
    import uuid

    import dask
    from dask.tokenize import TokenizationError, tokenize

    from .parallel import compute

    digest = hashlib.sha256()
    rest = ds.drop_vars(list(cubes))
    rest.attrs = {k: v for k, v in ds.attrs.items() if k != STATE_ATTR}
    cube_attrs = {str(name): (ds.variables[name].dims, {k: v for k, v in ds.variables[name].attrs.items()
                                                         if k not in (MANIFEST_ATTR, QUALITY_ATTR)})
                  for name in cubes}
    try:
        digest.update(tokenize(rest, cube_attrs, ensure_deterministic=True).encode())
    except TokenizationError:
        digest.update(uuid.uuid4().bytes)
    for name, cube in sorted(cubes.items(), key=lambda item: str(item[0])):
        layout = [str(name), cube.shape, cube.chunk_shape, str(cube.dtype), cube.band_axis,
                  repr(cube.fill_value), getattr(cube, "nodata", None), cube.config]
        digest.update(json.dumps(layout, sort_keys=True, default=str).encode())
        if isinstance(cube, FitJob):
            blocks = cube.data.to_delayed().ravel()
            for part in compute([dask.delayed(_digest, pure=True)(block) for block in blocks], scheduler=scheduler):
                digest.update(part)
        else:
            for index in np.ndindex(*cube.grid_shape):
                digest.update(_digest(cube.stream(index)))
    return digest.hexdigest()


def _digest(data) -> bytes:
    if not isinstance(data, bytes):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class _Staging:
    """Where a write is made before it is put in place of its target."""

    store: object
    group: str | None
    renamed: bool
    """A local directory beside the target, exchanged with it; else copied over it (:func:`_publish`)."""


def _staging(store, group) -> _Staging | None:
    """Beside the target: ``<path>.writing`` (a local directory or a URL), or the group ``<group>.writing``
    (``.writing`` for a store's root); None (written in place) in a store without consolidated metadata,
    whose readers could not switch from one store to the other at once (e.g. Icechunk)."""
    if group is None and isinstance(store, (str, os.PathLike)):
        if "://" in str(store):
            return _Staging(str(store).rstrip("/") + ".writing", None, renamed=False)
        target = Path(store).absolute()
        return _Staging(str(target.with_name(target.name + ".writing")), None, renamed=True)
    if not isinstance(store, (str, os.PathLike)) and not (
            store.supports_consolidated_metadata and store.supports_deletes and store.supports_listing):
        return None
    return _Staging(store, f"{group.strip('/')}.writing" if group else ".writing", renamed=False)


def _exists(store, group) -> bool:
    """Something at a local path; else a Zarr group (a store's root: with members besides the staging)."""
    if group is None and isinstance(store, (str, os.PathLike)) and "://" not in str(store):
        return Path(store).exists()
    try:
        zgroup = zarr.open_group(store, path=group or "", mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return group is not None or any(name != ".writing" for name in zgroup.keys())


def _describe(store, group) -> str:
    return f"{store}" + (f", group {group!r}" if group else "")


def _stored_streams(where, group, zarr_format, fingerprint, cubes, finished: bool):
    """The valid streams of an unfinished write of the same cubes at ``where`` (or a ``finished`` one:
    a staged store not yet put in place), else None."""
    try:
        zgroup = zarr.open_group(where, path=group or "", mode="r", zarr_format=zarr_format)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None
    state = zgroup.attrs.get(STATE_ATTR)
    if (not isinstance(state, dict) or state.get("fingerprint") != fingerprint
            or state.get("state") != "writing" and not finished):
        return None
    stored = {}
    for name, cube in cubes.items():
        source = StoredCube(zgroup[str(name)], missing="fill")
        stored[name] = {}
        for index in np.ndindex(*cube.grid_shape):
            try:
                stream = source.stream(index)
                if stream is not None:
                    check_layout(stream, cube.chunk_shape, cube.dtype)
                    stored[name][index] = stream
            except StreamError:  # an invalid chunk is fitted again
                pass
    return stored


_CHUNK_KEYS = {3: ({"name": "default", "separator": "/"}, {"name": "v2", "separator": "."}),
               2: ({"name": "v2", "separator": "."}, {"name": "v2", "separator": "/"})}
"""Two chunk key encodings per Zarr format whose keys differ (``c/0/1`` or ``0.1``; ``0.1`` or ``0/1``)."""


def _disjoint_chunk_keys(store, group, ds: xr.Dataset, zarr_format: int) -> dict:
    """For each variable with an array at the target, a chunk key encoding whose keys differ from that
    array's, so that copying the new chunks in (:func:`_publish`) overwrites none that old readers use.
    (Zarr format 2 keys of 0- and 1-dimensional arrays are the same in both encodings.)"""
    from zarr.core.chunk_key_encodings import parse_chunk_key_encoding

    try:
        old = zarr.open_group(store, path=group or "", mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return {}
    chosen = {}
    for name in ds.variables:
        array = old.get(str(name))
        if not isinstance(array, zarr.Array):
            continue
        first = (0,) * array.ndim
        chosen[name] = next((encoding for encoding in _CHUNK_KEYS[zarr_format]
                             if parse_chunk_key_encoding(encoding).encode_chunk_key(first)
                             != array.metadata.encode_chunk_key(first)), _CHUNK_KEYS[zarr_format][0])
    return chosen


def _layout(ds, cubes, where, *, group, mode, zarr_format, fingerprint, chunk_keys: Mapping) -> None:
    """Metadata, coordinates and the other variables; the cubes' arrays without their chunks
    (their chunk keys as ``chunk_keys`` says, where it names a variable)."""
    import dask.array as dsa

    names = list(cubes)
    ds = ds.copy(deep=False)
    for name, encoding in chunk_keys.items():
        ds.variables[name].encoding = {**ds.variables[name].encoding, "chunk_key_encoding": encoding}
    cube_vars = ds[names]
    for name in names:
        cube = cubes[name]
        attrs = without_identity_scaling({k: v for k, v in ds.variables[name].attrs.items()
                                          if k not in (MANIFEST_ATTR, QUALITY_ATTR)})
        variable = xr.Variable(ds.variables[name].dims, dsa.empty(cube.shape, dtype=cube.dtype,
                                                                   chunks=cube.chunk_shape), attrs)
        variable.encoding = _cube_encoding(ds.variables[name], cube, zarr_format)
        if name in chunk_keys:
            variable.encoding["chunk_key_encoding"] = chunk_keys[name]
        cube_vars[name] = variable
    attrs = {k: v for k, v in ds.attrs.items() if k != STATE_ATTR}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        ds.drop_vars(names).assign_attrs(attrs).to_zarr(where, group=group, mode=mode, zarr_format=zarr_format,
                                                        consolidated=False)
        cube_vars.to_zarr(where, group=group, mode="a", zarr_format=zarr_format, consolidated=False, compute=False)
    zgroup = zarr.open_group(where, path=group or "", mode="r+", zarr_format=zarr_format)
    for name in names:
        array = zgroup[str(name)]
        if tuple(array.chunks) != cubes[name].chunk_shape or inr_codec_of(array) is None:
            raise RuntimeError(f"{name!r} was laid out with chunks {array.chunks}, not {cubes[name].chunk_shape}")
    zgroup.attrs[STATE_ATTR] = {"state": "writing", "fingerprint": fingerprint}


def _put_stream(array, index, stream: bytes) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    path = array.store_path / array.metadata.encode_chunk_key(tuple(int(i) for i in index))
    sync(path.set(default_buffer_prototype().buffer.from_bytes(stream)))


def _put_in_place(staging: _Staging, store, group, zarr_format: int, consolidate_root: bool) -> None:
    """The finished store at ``staging`` in place of (store, group); for a group, the store's
    root metadata consolidated again, as xarray writes it (xarray reads a group through it)."""
    if staging.renamed:
        _swap_in(Path(staging.store), Path(store).absolute())
        return
    from zarr.core.sync import sync
    from zarr.storage._common import make_store_path

    source = sync(make_store_path(staging.store, path=staging.group or "", mode="a"))
    target = sync(make_store_path(store, path=group or "", mode="a"))
    old = sync(_publish(source, target))
    if consolidate_root:
        _consolidate(target.store, None, zarr_format)
    sync(_delete(target, old))


_DOCUMENTS = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def _publish_rank(key: str, old_keys: set) -> int:
    """Copy order: new chunks, the arrays' metadata, chunks at keys the old store uses too (Zarr
    format 2 keys of 0- and 1-dimensional arrays), the group's metadata, its consolidated metadata."""
    if key in ("zarr.json", ".zmetadata"):
        return 4
    if key in (".zgroup", ".zattrs"):
        return 3
    if key.rsplit("/", 1)[-1] in _DOCUMENTS:
        return 1
    return 2 if key in old_keys else 0


def _prefix(path: str) -> str:
    return f"{path}/" if path else ""


async def _publish(source, target) -> list[str]:
    """Copy the finished store at ``source`` over the one at ``target`` (zarr StorePaths) and delete
    ``source``; return the keys only the old store had (for :func:`_delete`).

    The new chunks have keys the old arrays do not use (:func:`_disjoint_chunk_keys`) and are copied
    first, the group's consolidated metadata last (:func:`_publish_rank`): a reader going through
    the consolidated metadata (xarray's default) sees the old store until that one write, then the
    new one. Run again after a crash, it completes the same copy."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    async def keys(store_path, skip=None):
        start = _prefix(store_path.path)
        return [key[len(start):] async for key in store_path.store.list_prefix(start)
                if skip is None or not key.startswith(skip)]

    inside = source.store is target.store and source.path.startswith(_prefix(target.path))
    new = await keys(source)
    old = await keys(target, skip=_prefix(source.path) if inside else None)

    async def copy(key):
        value = await source.store.get(_prefix(source.path) + key, prototype=default_buffer_prototype())
        await target.store.set(_prefix(target.path) + key, value)

    old = set(old)
    for rank in range(5):
        await asyncio.gather(*(copy(key) for key in new if _publish_rank(key, old) == rank))
    await source.store.delete_dir(source.path)
    return sorted(old - set(new))


async def _delete(target, keys) -> None:
    import asyncio

    await asyncio.gather(*(target.store.delete(_prefix(target.path) + key) for key in keys))


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished store at ``target``: one atomic exchange where Linux offers it."""
    if not target.exists():
        os.rename(staging, target)
        return
    if not _exchange(staging, target):  # two renames: for an instant, no store at target
        old = target.with_name(target.name + ".replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(staging, target)
        staging = old
    shutil.rmtree(staging)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def open_zarr(store, *, scale: float | Mapping[Hashable, float] | None = None, group: str | None = None,
              decode_coords: str | bool = "all", mask_and_scale: bool = False, missing: str = "raise",
              **kwargs) -> xr.Dataset:
    """Open a store lazily, its xr-inr cubes decoded chunk by chunk when read.

    ``xarray.open_zarr`` with two different defaults: ``decode_coords="all"``
    (the CRS comes back as a coordinate) and ``mask_and_scale=False`` (an
    integer cube stays integer; its ``_FillValue`` stays an attribute).

    scale : evaluate the networks on a coarser (or finer) grid instead of
        decoding chunks: 0.25 gives a quarter-size preview, without decoding
        any chunk whole (see ``DataArray.inr.resample``).
    missing : ``"raise"`` (default): reading a missing chunk, one that differs
        from what the writer recorded, or a store whose write did not finish,
        raises :class:`~xr_inr.ChunkError` naming the variable and chunk;
        ``"fill"``: missing chunks read as the fill value (Zarr's own rule).

    The cubes' arrays support ``.inr.resample``, ``.inr.interp``,
    ``.inr.nbytes`` and ``.inr.bpppb``.
    """
    zgroup = zarr.open_group(store, path=group or "", mode="r")
    state = zgroup.attrs.get(STATE_ATTR)
    if missing == "raise" and isinstance(state, dict) and state.get("state") != "complete":
        raise ChunkError(f"the write of {store!r} did not finish: xr_inr.verify() lists the missing chunks, "
                         "the same to_zarr call completes it (or pass missing='fill')")
    ds = xr.open_zarr(store, group=group, decode_coords=decode_coords, mask_and_scale=False, **kwargs)
    ds.attrs.pop(STATE_ATTR, None)
    for name in list(ds.data_vars):
        try:
            array = zgroup[str(name)]
        except KeyError:
            continue
        if not isinstance(array, zarr.Array) or inr_codec_of(array) is None:
            continue
        variable = ds.variables[name]
        source = StoredCube(array, missing=missing)
        if variable.shape != source.shape or variable.dtype != source.dtype:
            continue
        attrs = {k: v for k, v in variable.attrs.items() if k not in (MANIFEST_ATTR, QUALITY_ATTR)}
        ds[name] = variable.copy(deep=False, data=source.lazy())
        ds[name].attrs = attrs
    if scale is not None:
        from .resolution import resample_dataset

        ds = resample_dataset(ds, scale)
    if mask_and_scale:
        ds = xr.decode_cf(ds, mask_and_scale=True, decode_times=False, decode_coords=False,
                          decode_timedelta=False, concat_characters=False)
    return ds


@dataclass
class StoreReport:
    """What :func:`verify` found: each problem as (variable, chunk index, message)."""

    store: str
    unfinished: bool = False
    """The write did not finish (``to_zarr`` again completes it)."""
    missing: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    """Stored bytes that differ from the writer's manifest (swapped, altered, or a stream of another shape/dtype)."""
    unreadable: list = field(default_factory=list)
    checked: int = 0
    """Chunks checked."""
    unchecked: list = field(default_factory=list)
    """xr-inr arrays without a manifest (not written by ``to_zarr``): missing chunks found, swaps not."""
    without_layout: list = field(default_factory=list)
    """Zarr format 2 xr-inr arrays whose compressor config lacks ``chunk_shape`` and ``dtype`` (written
    before 2026-11-26): a plain reader does not check their chunks' layout; :func:`upgrade` records it.
    Not a problem (``ok`` stays true): this reader checks every chunk's layout itself."""

    @property
    def ok(self) -> bool:
        return not (self.unfinished or self.missing or self.mismatched or self.unreadable)

    def raise_for_problems(self) -> StoreReport:
        """Raise :class:`~xr_inr.ChunkError` listing the problems, else return the report."""
        if not self.ok:
            lines = [f"{self.store}: " + ("unfinished write; " if self.unfinished else "")
                     + f"{len(self.missing)} missing, {len(self.mismatched)} mismatched, "
                     f"{len(self.unreadable)} unreadable of {self.checked} chunks"]
            lines += [f"  {why}" for kind in ("missing", "mismatched", "unreadable")
                      for _, _, why in getattr(self, kind)[:20]]
            raise ChunkError("\n".join(lines))
        return self


def verify(store, *, group: str | None = None, decode: bool = False) -> StoreReport:
    """Check every chunk of every xr-inr array of a store against what the writer recorded.

    Each chunk: present, the bytes the writer stored (size and digest in the
    manifest), a valid stream (its checksum) of the array's chunk shape and
    dtype; ``decode=True`` also decodes each one. A store whose first write is
    unfinished (``<path>.writing`` or ``<group>.writing`` beside a missing target)
    is checked there. Returns a :class:`StoreReport` (``.ok``, ``.raise_for_problems()``,
    and ``.without_layout``: format 2 arrays to :func:`upgrade`).
    """
    staging = _staging(store, group)
    if staging is not None and not _exists(store, group) and _exists(staging.store, staging.group):
        store, group = staging.store, staging.group
    zgroup = zarr.open_group(store, path=group or "", mode="r")
    state = zgroup.attrs.get(STATE_ATTR)
    report = StoreReport(str(store), unfinished=isinstance(state, dict) and state.get("state") != "complete")
    for name, array in zgroup.arrays():
        codec = inr_codec_of(array)
        if codec is None:
            continue
        if array.metadata.zarr_format == 2 and codec.chunk_shape is None:
            report.without_layout.append(name)
        source = StoredCube(array)
        if source.manifest is None:
            report.unchecked.append(name)
        for index in np.ndindex(*source.grid_shape):
            report.checked += 1
            try:
                data = _ChunkRef(source, index).get()
                if decode:
                    _decoded(_ChunkRef(source, index), data)
            except ChunkError as err:
                getattr(report, err.kind).append((name, index, str(err)))
    return report


LAYOUT_KEYS = ("chunk_shape", "dtype")
"""The chunk layout in a format 2 array's xr_inr compressor config (``_cube_encoding``)."""


def upgrade(store, *, group: str | None = None) -> dict[str, dict]:
    """Record the chunk layout in the xr_inr compressor config of a Zarr format 2 store's arrays, in place.

    Format 2 stores written before 2026-11-26 (or by Zarr itself) lack the
    config's ``chunk_shape`` and ``dtype``, with which a plain reader refuses
    a stream of another layout (docs/reliability.md). For each xr-inr array of
    the group lacking them (in ``.zarray`` or in a consolidated ``.zmetadata``
    copy), they are set from the array's ``.zarray`` (``chunks``, ``dtype``);
    nothing else in the metadata changes. Chunks are neither read nor
    rewritten: :func:`verify` checks them against the same layout. Returns
    ``{array: {"chunk_shape": [...], "dtype": ...}}`` of the arrays changed;
    empty for an up-to-date or format 3 store.
    """
    zgroup = zarr.open_group(store, path=group or "", mode="r+", use_consolidated=False)
    if zgroup.metadata.zarr_format != 2:
        return {}
    root = zgroup.store_path.store
    parts = [p for p in zgroup.store_path.path.split("/") if p]
    documents = {}  # key: the JSON document to write back if changed
    consolidated = []  # (.zmetadata key, the group's path relative to it): the group's and its parents'
    for depth in range(len(parts) + 1):
        key = "/".join([*parts[:depth], ".zmetadata"])
        doc = _read_json(root, key)
        if doc is not None:
            documents[key] = doc
            consolidated.append((key, "/".join(parts[depth:])))
    changed, dirty = {}, set()
    for name, array in zgroup.arrays():
        if inr_codec_of(array) is None:
            continue
        zarray_key = f"{array.store_path.path}/.zarray"
        documents[zarray_key] = zarray = _read_json(root, zarray_key)
        copies = {zarray_key: zarray}
        for key, prefix in consolidated:
            entry = documents[key].get("metadata", {}).get("/".join(p for p in (prefix, name, ".zarray") if p))
            if entry is not None:
                copies[key] = entry
        stale = {key: copy["compressor"] for key, copy in copies.items()
                 if not all(k in copy["compressor"] for k in LAYOUT_KEYS)}
        if stale:
            changed[name] = layout = _chunk_layout(name, zarray)
            for key, compressor in stale.items():
                compressor.update(layout)
                dirty.add(key)
    for key in sorted(dirty, key=lambda k: k.endswith(".zmetadata")):  # every array checked: .zarray first
        _write_json(root, key, documents[key], indent=None if key.endswith(".zmetadata") else 2)
    return changed


def _chunk_layout(name: str, zarray: dict) -> dict:
    """The ``chunk_shape`` and ``dtype`` of a format 2 xr-inr array, from its ``.zarray``."""
    if zarray.get("filters"):
        raise ValueError(f"{name!r}: filters come before the xr_inr compressor, so .zarray does not give "
                         "the layout it gets; the store is left as it was")
    layout = {"chunk_shape": [int(n) for n in zarray["chunks"]], "dtype": str(np.dtype(zarray["dtype"]))}
    try:
        INRCodec(**layout)  # a layout the codec takes: 3 sizes and a dtype streams hold
    except ValueError as err:
        raise ValueError(f"{name!r}: {err}; the store is left as it was") from None
    return layout


def _read_json(store, key: str):
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else json.loads(buf.to_bytes())


def _write_json(store, key: str, doc, indent: int | None) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    data = json.dumps(doc, indent=indent).encode()
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

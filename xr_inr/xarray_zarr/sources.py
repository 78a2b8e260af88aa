"""Where the streams of a compressed cube live, and lazy dask arrays over them.

A *source* holds one xr-inr stream per chunk of a regular chunk grid (the
Zarr grid: every chunk ``chunk_shape``, the last ones along each axis cut by
the array's edge):

* :class:`CompressedCube` keeps them in memory, the result of
  ``DataArray.inr.compress``;
* :class:`StoredCube` reads them from a Zarr array (format 2 or 3).

Both give :meth:`ChunkSource.lazy`, a dask array decoding one whole chunk per
task, and :meth:`ChunkSource.sample`, a dask array that evaluates the networks
only at chosen (fractional) pixel positions: the any-resolution decode.

The accessor finds the source behind a DataArray from the name of its dask
array (:func:`source_of`). The registry holds sources weakly; the tasks of
the dask graph hold them strongly, so a source lives as long as an array
built on it.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from typing import Any

import dask.array as dsa
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..core.codec import INRCodec
from ..core.decode import LayoutError, check_layout, decode_block, inspect
from ..core.stream import StreamError

_REGISTRY: weakref.WeakValueDictionary[str, ChunkSource] = weakref.WeakValueDictionary()


def source_of(data) -> ChunkSource | None:
    """The source whose :meth:`~ChunkSource.lazy` array ``data`` is, else None."""
    if not isinstance(data, dsa.Array):
        return None
    return _REGISTRY.get(data.name)


class ChunkError(StreamError):
    """A chunk of a compressed cube is missing, altered or unreadable (the message names the variable and chunk).

    ``kind``: "missing", "mismatched" (not the bytes the writer stored, or a stream
    of another shape or dtype) or "unreadable" (not a valid stream).
    """

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(message)
        self.kind = kind


class ChunkSource:
    """One stream per chunk of a regular grid; subclasses say where the bytes are."""

    name: str = "cube"
    """The variable, as errors name it."""

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype
    band_axis: int
    fill_value: float
    config: dict = {}
    quality: dict[tuple[int, ...], dict] = {}
    """With a PSNR target: ``{chunk index: {"psnr": dB, "encodes": n}}`` of the chunks fitted to it."""

    # -- to implement -------------------------------------------------------

    def stream(self, index: tuple[int, ...]) -> bytes | None:
        """The stream of chunk ``index`` (None: the chunk was never written)."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes of every stored stream together."""
        raise NotImplementedError

    # -- derived ------------------------------------------------------------

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunk_shape, strict=True))

    @property
    def bpppb(self) -> float:
        """Stored bits per element of the array (padding of edge chunks not counted)."""
        return 8 * self.nbytes / math.prod(self.shape)

    @property
    def spatial_axes(self) -> tuple[int, int]:
        axes = [a for a in range(3) if a != self.band_axis]
        return axes[0], axes[1]

    def valid_shape(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of chunk ``index`` inside the array (smaller at the far edges)."""
        return tuple(min(c, n - i * c) for i, c, n in zip(index, self.chunk_shape, self.shape, strict=True))

    @property
    def dask_chunks(self) -> tuple[tuple[int, ...], ...]:
        return tuple(
            tuple(min(c, n - i * c) for i in range(g))
            for n, c, g in zip(self.shape, self.chunk_shape, self.grid_shape, strict=True)
        )

    def inspect_chunks(self) -> dict[tuple[int, ...], dict]:
        """:func:`xr_inr.inspect` of every stored chunk (method, architecture, bytes), by chunk index;
        with a PSNR target, also ``psnr_target``, and the chunk's ``psnr`` and ``encodes`` where recorded."""
        streams = {index: self.stream(index) for index in np.ndindex(*self.grid_shape)}
        found = {index: inspect(stream) for index, stream in streams.items() if stream is not None}
        target = self.config.get("psnr")
        if target is not None:
            for index, info in found.items():
                info["psnr_target"] = target
                info.update(quality_entry(self.quality.get(index, {})))
        return found

    def _ref(self, index: tuple[int, ...]) -> Any:
        return _ChunkRef(self, index)

    def _fill(self) -> np.ndarray:
        """The fill value as a 0-d array of the cube's dtype (what a missing chunk holds)."""
        fill = self.fill_value
        if self.dtype.kind in "iu" and (fill is None or math.isnan(fill)):
            fill = 0
        return np.asarray(fill, dtype=self.dtype)

    def lazy(self) -> dsa.Array:
        """Dask array of the whole cube: one task per chunk, each decoding its stream."""
        name = "xr-inr-decode-" + tokenize(self.token())
        # a store opened twice gives equal tokens: every such array holds (and finds) the same source,
        # so the registry's entry lives as long as any of them
        source = _REGISTRY.setdefault(name, self)
        dsk = {}
        for index in np.ndindex(*self.grid_shape):
            dsk[(name, *index)] = (_decode_task, source._ref(index), self.valid_shape(index), self._fill())
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        return dsa.Array(graph, name, self.dask_chunks, meta=np.empty((0, 0, 0), self.dtype))

    def sample(self, positions: dict[int, np.ndarray]) -> dsa.Array:
        """Dask array of the cube evaluated at fractional pixel positions along the spatial axes.

        ``positions`` maps a spatial axis to its 1-D positions (0 ... n - 1 in
        pixels of the whole array); an axis left out keeps every pixel. Each
        task evaluates one chunk's network at the positions that fall in it
        (the nearest pixel decides which chunk), nothing more.
        """
        runs = {}
        for axis in self.spatial_axes:
            pos = positions.get(axis)
            pos = np.arange(self.shape[axis], dtype=np.float64) if pos is None else np.asarray(pos, np.float64)
            if pos.ndim != 1 or pos.size == 0 or not np.isfinite(pos).all():
                raise ValueError(f"positions along axis {axis} must be a non-empty 1-D array of finite numbers")
            runs[axis] = _runs(pos, self.chunk_shape[axis], self.grid_shape[axis])
        band_chunks = self.dask_chunks[self.band_axis]
        name = "xr-inr-sample-" + tokenize(self.token(), {a: positions.get(a) for a in self.spatial_axes})
        a1, a2 = self.spatial_axes
        dsk = {}
        for b in range(len(band_chunks)):
            for i, (c1, local1) in enumerate(runs[a1]):
                for j, (c2, local2) in enumerate(runs[a2]):
                    index, key = [0, 0, 0], [0, 0, 0]
                    index[self.band_axis], index[a1], index[a2] = b, c1, c2
                    key[self.band_axis], key[a1], key[a2] = b, i, j
                    dsk[(name, *key)] = (_sample_task, self._ref(tuple(index)), local1, local2,
                                         self.band_axis, band_chunks[b], self._fill())
        chunks = [None, None, None]
        chunks[self.band_axis] = band_chunks
        chunks[a1] = tuple(len(local) for _, local in runs[a1])
        chunks[a2] = tuple(len(local) for _, local in runs[a2])
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        return dsa.Array(graph, name, tuple(chunks), meta=np.empty((0, 0, 0), self.dtype))

    def token(self) -> Any:
        return (type(self).__name__, id(self))


def _runs(pos: np.ndarray, chunk: int, n_chunks: int) -> list[tuple[int, np.ndarray]]:
    """Split positions into runs falling in one chunk: [(chunk index, local positions), ...]."""
    owner = np.clip(np.floor(np.rint(pos) / chunk).astype(np.int64), 0, n_chunks - 1)
    breaks = np.flatnonzero(np.diff(owner)) + 1
    return [(int(owner[s[0]]), pos[s] - owner[s[0]] * chunk) for s in np.split(np.arange(pos.size), breaks)]


class _ChunkRef:
    """A chunk's stream, fetched when a task runs; pickles to its bytes when in memory."""

    __slots__ = ("source", "index")

    def __init__(self, source: ChunkSource, index: tuple[int, ...]):
        self.source, self.index = source, index

    def get(self) -> bytes | None:
        """The stream, checked against the array's chunk shape and dtype (ChunkError otherwise)."""
        source, index = self.source, self.index
        stream = source.stream(index)
        if stream is not None:
            try:
                check_layout(stream, source.chunk_shape, source.dtype)
            except StreamError as err:
                kind = "mismatched" if isinstance(err, LayoutError) else "unreadable"
                raise ChunkError(f"variable {source.name!r}, chunk {index}: {err}", kind) from None
        return stream

    def __reduce__(self):
        if isinstance(self.source, CompressedCube):  # ship the bytes, not the whole cube
            return (_BytesRef, (self.source.streams[self.index],))
        return (_ChunkRef, (self.source, self.index))


class _BytesRef:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def get(self) -> bytes:
        return self.data


def _decode_task(ref, valid_shape, fill: np.ndarray) -> np.ndarray:
    buf = ref.get()
    if buf is None:
        return np.full(valid_shape, fill, dtype=fill.dtype)
    block = _decoded(ref, buf)
    return block[tuple(slice(0, n) for n in valid_shape)]  # an edge chunk's padding (shape checked)


def _sample_task(ref, local1, local2, band_axis, n_bands, fill: np.ndarray) -> np.ndarray:
    buf = ref.get()
    if buf is None:
        shape = [len(local1), len(local2)]
        shape.insert(band_axis, n_bands)
        return np.full(shape, fill, dtype=fill.dtype)
    block = _decoded(ref, buf, local1, local2)
    return np.take(block, np.arange(n_bands), axis=band_axis)


def _decoded(ref, buf: bytes, ys=None, xs=None) -> np.ndarray:
    try:
        return decode_block(buf, ys, xs)
    except StreamError as err:
        where = f"variable {ref.source.name!r}, chunk {ref.index}" if isinstance(ref, _ChunkRef) else "chunk"
        raise ChunkError(f"{where}: {err}") from None


class CompressedCube(ChunkSource):
    """Streams kept in memory: what ``DataArray.inr.compress`` returns, ready to be stored."""

    def __init__(self, streams: dict[tuple[int, ...], bytes], shape, chunk_shape, dtype, band_axis: int,
                 fill_value: float, config: dict, nodata: bool, quality: dict | None = None):
        self.streams = streams
        self.shape, self.chunk_shape = tuple(shape), tuple(chunk_shape)
        self.dtype, self.band_axis = np.dtype(dtype), band_axis
        self.fill_value = float(fill_value)
        self.config = dict(config)
        """INRCodec options the chunks were fitted with (bpppb included)."""
        self.nodata = nodata
        """Whether elements equal to the fill value were masked as nodata."""
        self.quality = dict(quality or {})
        missing = [index for index in np.ndindex(*self.grid_shape) if index not in streams]
        if missing:
            raise ValueError(f"no stream for chunks {missing[:5]}")

    def stream(self, index):
        return self.streams[index]

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.streams.values())


class StoredCube(ChunkSource):
    """Streams read from a Zarr array whose codec is xr_inr (format 2 or 3)."""

    def __init__(self, array, missing: str = "raise"):
        if missing not in ("raise", "fill"):
            raise ValueError(f"missing must be 'raise' or 'fill', got {missing!r}")
        self.array, self.missing = array, missing
        self.name = array.path
        self.shape, self.chunk_shape = tuple(array.shape), tuple(array.chunks)
        self.dtype = np.dtype(array.dtype)
        codec = inr_codec_of(array)
        if codec is None:
            raise ValueError(f"the Zarr array {array.path!r} is not stored with the xr_inr codec")
        self.band_axis = codec.band_axis
        self.config = {k: v for k, v in codec.get_config().items() if k not in ("id", "fill_value")}
        """INRCodec options recorded in the array's metadata."""
        fill = array.fill_value
        self.fill_value = math.nan if fill is None else float(np.asarray(fill).item())
        self.manifest = array.attrs.get(MANIFEST_ATTR)
        """``{"b.y.x": [nbytes, digest]}`` of the chunks the writer stored (None: not written by xr-inr)."""
        self.quality = read_quality(array.attrs.get(QUALITY_ATTR))

    def _key(self, index) -> str:
        return self.array.metadata.encode_chunk_key(tuple(int(i) for i in index))

    def stream(self, index):
        """The chunk's bytes, checked against the writer's manifest; None for a missing chunk only
        when ``missing="fill"``, else :class:`ChunkError`."""
        from zarr.core.sync import sync

        buf = sync((self.array.store_path / self._key(index)).get())
        data = None if buf is None else buf.to_bytes()
        problem = chunk_problem(data, self.manifest, index)
        if problem == "missing" and self.missing == "fill":
            return None
        if problem is not None:
            raise ChunkError(f"variable {self.name!r}, chunk {tuple(index)} (key {self._key(index)!r}): {problem}",
                             "missing" if data is None else "mismatched")
        return data

    @property
    def nbytes(self) -> int:
        from zarr.core.sync import sync

        async def sizes():
            total = 0
            for index in np.ndindex(*self.grid_shape):
                path = self.array.store_path / self._key(index)
                if await path.exists():
                    total += await path.store.getsize(path.path)
            return total

        return sync(sizes())

    def token(self):
        # what was written (the manifest) is part of the identity: a store overwritten in place is another cube
        return ("StoredCube", str(self.array.store_path), self.shape, self.chunk_shape, str(self.dtype), self.missing,
                self.manifest)


MANIFEST_ATTR = "xr_inr_chunks"
"""Array attribute the writer sets last: ``{"b.y.x": [nbytes, digest]}`` of every stored chunk
(:func:`chunk_digest`)."""


QUALITY_ATTR = "xr_inr_quality"
"""Array attribute of a cube fitted to a PSNR target (the target itself is the codec config's ``psnr``):
``{"b.y.x": {"psnr": dB, "encodes": n}}``, what each chunk achieved (an exact chunk: ``"inf"``) and the
encodes its search made. Written as each chunk is stored, so a resumed write keeps it."""


def read_quality(attr) -> dict[tuple[int, ...], dict]:
    """:data:`QUALITY_ATTR` by chunk index (entries that are not a mapping left out)."""
    if not isinstance(attr, dict):
        return {}
    out = {}
    for key, entry in attr.items():
        try:
            index = tuple(int(i) for i in key.split("."))
        except ValueError:
            continue
        if isinstance(entry, dict):
            out[index] = dict(entry)
    return out


def quality_entry(entry: dict) -> dict:
    """A chunk's quality record with its PSNR as a float (``"inf"`` stored for an exact chunk)."""
    entry = dict(entry)
    if "psnr" in entry:
        try:
            entry["psnr"] = float(entry["psnr"])
        except (TypeError, ValueError):
            entry.pop("psnr")
    return entry


def chunk_digest(data: bytes) -> str:
    """A stored chunk's checksum: BLAKE2b, 64 bits, hex (not CRC32: a stream ends with the CRC32
    of the rest, so the CRC32 of every whole stream is the same constant)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def chunk_problem(data: bytes | None, manifest: dict | None, index) -> str | None:
    """What is wrong with a chunk's stored bytes against the writer's manifest, else None."""
    if data is None:
        return "missing"
    if manifest is None:
        return None
    expected = manifest.get(manifest_key(index))
    if expected is None:
        return "stored but not in the manifest of what was written"
    if [len(data), chunk_digest(data)] != list(expected):
        return (f"{len(data)} bytes with digest {chunk_digest(data)}, the writer stored {expected[0]} bytes with "
                f"digest {expected[1]} (swapped or altered)")
    return None


def manifest_key(index) -> str:
    return ".".join(str(int(i)) for i in index)


def inr_codec_of(array) -> INRCodec | None:
    """The :class:`INRCodec` settings of a Zarr array stored with xr_inr, else None."""
    from .zarr_codec import INRZarrCodec

    serializer = getattr(array.metadata, "codecs", None)
    if serializer is not None:  # format 3
        for codec in serializer:
            if isinstance(codec, INRZarrCodec):
                return codec.codec
        return None
    compressor = getattr(array.metadata, "compressor", None)  # format 2
    if compressor is not None and getattr(compressor, "codec_id", None) == "xr_inr":
        return compressor
    return None

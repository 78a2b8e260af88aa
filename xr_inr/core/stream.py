"""The stored byte format of one compressed block (documented in docs/format.md).

Layout, little-endian::

    header   magic "XINR", version, method, dtype, band axis, flags, shape (3 x u32)
    [fill]   when flags has HAS_FILL: padded shape (3 x u32), fill value (f64)
    [mask]   NaN mask, when flags has HAS_NAN: kind (u8), length (u32), zlib(packbits)
    payload  method-specific: the special streams' here (pack_constant, pack_raw),
             the networks' in each method's ``payload`` module
    crc32    u32 of everything before it

Everything here is numpy and the standard library.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

MAGIC = b"XINR"
VERSION = 4
"""The format version written. Version 3 (xr-inr 0.3) differs in the grid payload's options only (no
pulls of the coefficient images' latents: bit 1 refused); version 2 (xr-inr 0.2) in the grid
payload's head (no options byte: no filters on the coefficient images); both are read as they were.
Version 1 (xr-inr 0.1.0) differs in the grid payload (pure-Python rANS under a float ARM): its
constant, raw and SIREN streams read as version 2; its grid streams are refused with a
:class:`StreamError` naming the versions that decode."""
HAS_NAN = 1
HAS_FILL = 2
"""The block was fitted on its valid region only: it decodes to a larger (padded)
shape, the padding and the masked elements taking the stored fill value."""

_HEADER = struct.Struct("<4sBBBBB3I")
_FILL = struct.Struct("<3Id")
_MASK_HEAD = struct.Struct("<BI")
AFFINE = struct.Struct("<dd")
"""(offset, scale) of an affine normalisation, as the raw and grid payloads begin."""
_CRC = struct.Struct("<I")

MAX_BLOCK_VALUES = 2**28
"""The most values a stream may declare for its block (padded shape; 2 GiB as float64): every
array the decoder makes is a small multiple of it at most (docs/format.md, "Decoder limits")."""
MAX_WORK_PER_VALUE = 2**15
"""The most decoding work a stream may declare per value of its block, in multiply-adds (costs
that are not products counted as the multiply-adds that take as long: grid
``payload.decode_work``, SIREN ``payload.work_per_pixel``), so that decoding time grows at most
in proportion to the block's size. 11x the most that a grid stream the encoder writes needs
(2,979, one band; tests/test_fuzz.py); the SIREN encoder refuses blocks over it."""

DTYPES = {1: np.dtype("float32"), 2: np.dtype("float64"), 3: np.dtype("uint16"), 4: np.dtype("int16"), 5: np.dtype("uint8")}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}


class StreamError(ValueError):
    """The bytes are not a valid xr-inr stream (foreign, truncated or corrupted)."""


class Method(IntEnum):
    CONSTANT = 0  # every valid value equal: one float64
    RAW = 1  # values stored as float16 after affine normalisation (blocks too small for a network)
    SIREN = 2  # the paper's SIREN, fp16 weights (xr_inr.methods.siren)
    GRID = 3  # latent grids + learned spectral basis, entropy coded (xr_inr.methods.grid)


class MaskKind(IntEnum):
    PIXEL = 0  # one bit per (y, x), the same for every band
    ELEMENT = 1  # one bit per (band, y, x)


@dataclass
class Header:
    method: Method
    dtype: np.dtype
    band_axis: int
    shape: tuple[int, int, int]
    """Shape of the region that was fitted (the valid region), in stored axis order."""
    has_nan: bool
    padded_shape: tuple[int, int, int] | None = None
    """Shape the block decodes to, when larger than ``shape`` (``HAS_FILL``); the
    valid region sits at the start of every axis, as in a Zarr edge chunk."""
    fill_value: float | None = None
    """Value of the padding and of masked elements (``HAS_FILL``); None: masked elements are NaN."""
    version: int = VERSION
    """Format version of the stream (a method's payload may depend on it)."""

    @property
    def has_fill(self) -> bool:
        return self.padded_shape is not None

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Shape the block decodes to (stored axis order)."""
        return self.padded_shape if self.padded_shape is not None else self.shape

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """(bands, height, width) of the block with the band axis moved first."""
        rest = [n for axis, n in enumerate(self.shape) if axis != self.band_axis]
        return (self.shape[self.band_axis], rest[0], rest[1])


HEADER_BYTES = _HEADER.size
FILL_BYTES = _FILL.size
CRC_BYTES = _CRC.size


def pack_header(header: Header) -> bytes:
    flags = (HAS_NAN if header.has_nan else 0) | (HAS_FILL if header.has_fill else 0)
    packed = _HEADER.pack(
        MAGIC,
        VERSION,
        int(header.method),
        DTYPE_CODES[header.dtype],
        header.band_axis,
        flags,
        *header.shape,
    )
    if header.has_fill:
        if header.fill_value is None or any(p < s for p, s in zip(header.padded_shape, header.shape, strict=True)):
            raise ValueError(f"padded shape {header.padded_shape} must cover {header.shape} and have a fill value")
        packed += _FILL.pack(*header.padded_shape, float(header.fill_value))
    return packed


def pack_mask(nan: np.ndarray) -> bytes:
    """Code the NaN positions of a (bands, h, w) block: per pixel when every band agrees."""
    per_pixel = nan.any(axis=0)
    if np.array_equal(np.broadcast_to(per_pixel, nan.shape), nan):
        kind, bits = MaskKind.PIXEL, per_pixel
    else:
        kind, bits = MaskKind.ELEMENT, nan
    packed = zlib.compress(np.packbits(bits.ravel()).tobytes(), 9)
    return _MASK_HEAD.pack(int(kind), len(packed)) + packed


def pack_raw(offset: float, scale: float, normalised: np.ndarray) -> bytes:
    return AFFINE.pack(offset, scale) + normalised.astype("<f2").tobytes()


def pack_constant(value: float) -> bytes:
    return struct.pack("<d", value)


def seal(body: bytes) -> bytes:
    """Append the checksum."""
    return body + _CRC.pack(zlib.crc32(body))


class ByteCursor:
    """Reads a byte string from the front; running past its end raises ``error(message)``."""

    def __init__(self, data: bytes, pos: int = 0, error: type[Exception] = StreamError,
                 message: str = "stream ends early"):
        self.data, self.pos, self._error, self._message = data, pos, error, message

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._error(self._message)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct | str) -> tuple:
        fmt = struct.Struct(fmt) if isinstance(fmt, str) else fmt
        return fmt.unpack(self.take(fmt.size))

    def array(self, dtype, count: int) -> np.ndarray:
        """The next ``count`` values of ``dtype``."""
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(dtype.itemsize * count), dtype)

    def rest(self) -> bytes:
        return self.take(self.remaining)


class Reader:
    """Parses a sealed stream: checks magic, version, length and checksum first."""

    def __init__(self, data: bytes):
        data = bytes(data)
        if len(data) < HEADER_BYTES + CRC_BYTES:
            raise StreamError(f"stream too short ({len(data)} bytes) to be an xr-inr block")
        magic, version, method, dtype_code, band_axis, flags, *shape = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise StreamError(f"not an xr-inr stream (magic {magic!r}, expected {MAGIC!r})")
        if not 1 <= version <= VERSION:
            raise StreamError(f"unsupported xr-inr stream version {version} (this reader knows 1 to {VERSION})")
        (crc,) = _CRC.unpack_from(data, len(data) - CRC_BYTES)
        if zlib.crc32(data[:-CRC_BYTES]) != crc:
            raise StreamError("xr-inr stream checksum mismatch: the data is truncated or corrupted")
        try:
            method = Method(method)
        except ValueError:
            raise StreamError(f"unknown method code {method}") from None
        if version == 1 and method == Method.GRID:
            raise StreamError(f"a grid stream of format version 1 (xr-inr 0.1.0): this reader decodes grid streams "
                              f"of versions 2 to {VERSION} only; decode it with xr-inr 0.1.0 and encode it again")
        if dtype_code not in DTYPES or band_axis > 2 or min(shape) < 1 or flags & ~(HAS_NAN | HAS_FILL):
            raise StreamError("invalid xr-inr header (dtype, band axis, shape or flags)")
        self.header = Header(method, DTYPES[dtype_code], band_axis, tuple(shape), bool(flags & HAS_NAN),
                             version=version)
        self._cursor = ByteCursor(data[:-CRC_BYTES], HEADER_BYTES, StreamError,
                                  "xr-inr stream ends before its payload does")
        self._take, self._unpack = self._cursor.take, self._cursor.unpack
        if flags & HAS_FILL:
            *padded, fill_value = self._unpack(_FILL)
            if any(p < s for p, s in zip(padded, shape, strict=True)):
                raise StreamError(f"invalid xr-inr padding: {tuple(padded)} smaller than {tuple(shape)}")
            self.header.padded_shape = tuple(padded)
            self.header.fill_value = fill_value
        if math.prod(self.header.out_shape) > MAX_BLOCK_VALUES:
            raise StreamError(f"the stream declares a {self.header.out_shape} block, more than the decoder's "
                              f"limit of {MAX_BLOCK_VALUES} values")

    def mask(self) -> np.ndarray | None:
        """The (bands, h, w) NaN mask, or None when the block had no NaN."""
        if not self.header.has_nan:
            return None
        kind, length = self._unpack(_MASK_HEAD)
        if kind not in (MaskKind.PIXEL, MaskKind.ELEMENT):
            raise StreamError(f"unknown NaN mask kind {kind}")
        bands, h, w = self.header.block_shape
        n_bits = h * w if kind == MaskKind.PIXEL else bands * h * w
        n_bytes = -(-n_bits // 8)
        inflater = zlib.decompressobj()
        try:  # never inflates more than the block's bits
            packed = inflater.decompress(self._take(length), n_bytes)
        except zlib.error as exc:
            raise StreamError(f"corrupted NaN mask: {exc}") from None
        if len(packed) < n_bytes or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise StreamError(f"the NaN mask does not inflate to the block's {n_bytes} bytes exactly")
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n_bits).astype(bool)
        if kind == MaskKind.PIXEL:
            return np.broadcast_to(bits.reshape(1, h, w), (bands, h, w))
        return bits.reshape(bands, h, w)

    def constant(self) -> float:
        return struct.unpack("<d", self._take(8))[0]

    def raw(self) -> tuple[float, float, np.ndarray]:
        offset, scale = self._unpack(AFFINE)
        return offset, scale, self._cursor.array("<f2", int(np.prod(self.header.block_shape)))

    def payload(self) -> bytes:
        """The rest of the stream: a network method's payload."""
        return self._cursor.rest()

    def finish(self) -> None:
        """Check that the whole payload was read."""
        if self._cursor.remaining:
            raise StreamError(f"{self._cursor.remaining} unexpected bytes after the payload")

"""``INRZarrCodec``: the INR codec as a Zarr format 3 array-to-bytes codec.

Zarr format 3 wants an ``ArrayBytesCodec`` (the "serializer") where format 2
took a numcodecs compressor. This class wraps :class:`xr_inr.core.codec.INRCodec`;
it is registered under the name ``xr_inr`` through the ``zarr.codecs`` entry
point, so ``zarr.open`` and ``xarray.open_zarr`` read such arrays in a process
that never imported xr_inr. Decoding needs numpy only.

When Zarr itself encodes (``array[...] = data``), edge chunks arrive padded
with the array's fill value: the padding is left out of the fit (see
:meth:`INRCodec.encode_padded`). Arrays written by ``DataArray.inr`` never go
through :meth:`_encode_single`: the accessor stores the chunks it fitted.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer

from ..core.codec import INRCodec
from ..core.decode import check_layout, decode_block

CODEC_NAME = "xr_inr"


@dataclass(frozen=True)
class INRZarrCodec(ArrayBytesCodec):
    """Zarr 3 serializer storing each chunk as one xr-inr stream.

    ``INRZarrCodec(bpppb=0.05, band_axis=0, **options)`` takes the options of
    :class:`~xr_inr.core.codec.INRCodec` (they matter for encoding only).
    """

    is_fixed_size = False
    configuration: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **configuration: Any) -> None:
        configuration.pop("id", None)
        configuration.pop("fill_value", None)  # the array's own fill value is used
        codec = INRCodec(**configuration)  # validates the options
        config = codec.get_config()
        config.pop("id")
        object.__setattr__(self, "configuration", config)

    @property
    def codec(self) -> INRCodec:
        return INRCodec.from_config(self.configuration)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> INRZarrCodec:
        """The codec of a stored array: only what decoding needs is checked (see
        :meth:`INRCodec.from_config`); encoding with odd stored settings raises."""
        if data.get("name") != CODEC_NAME:
            raise ValueError(f"expected codec name {CODEC_NAME!r}, got {data.get('name')!r}")
        config = dict(data.get("configuration") or {})
        config.pop("fill_value", None)
        config = INRCodec.from_config(config).get_config()
        config.pop("id")
        codec = object.__new__(cls)
        object.__setattr__(codec, "configuration", config)
        return codec

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": dict(self.configuration)}

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.configuration.items())))

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        ndim = len(shape)
        if ndim != 3:
            raise ValueError(f"the xr_inr codec stores 3-D arrays (bands and two spatial axes), got {ndim}-D")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable size

    # -- decoding (numpy only) --------------------------------------------

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = chunk_bytes.to_bytes()
        check_layout(data, chunk_spec.shape, chunk_spec.dtype.to_native_dtype())  # before decoding
        block = decode_block(data)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(block)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    # -- encoding (torch) -------------------------------------------------

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        chunk = np.asarray(chunk_array.as_ndarray_like())
        fill = _as_float(chunk_spec.fill_value)
        codec = self.codec
        stream = codec.encode_block(chunk) if fill is None else codec.encode_padded(chunk, fill)
        return chunk_spec.prototype.buffer.from_bytes(stream)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)


def _as_float(value) -> float | None:
    try:
        value = float(np.asarray(value).item())
    except (TypeError, ValueError):
        return None
    return value if not math.isinf(value) else None

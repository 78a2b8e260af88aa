"""xr-inr: hyperspectral compression with implicit neural representations.

``import xr_inr`` registers the ``xr_inr`` numcodecs codec and the
``DataArray.inr`` / ``Dataset.inr`` accessors (the Zarr format 3 codec is
found through its entry point). Decoding needs numpy only; encoding imports
torch when it first fits a network.
"""

from numcodecs.registry import register_codec

from .accessor import BandDimError, INRDataArrayAccessor, INRDatasetAccessor, find_band_dim
from .bitstream import StreamError
from .codec import BudgetWarning, INRCodec, decode_block, decode_counter, inspect
from .store import open_zarr
from .zarr_codec import INRZarrCodec

register_codec(INRCodec)

__all__ = [
    "BandDimError",
    "BudgetWarning",
    "INRCodec",
    "INRDataArrayAccessor",
    "INRDatasetAccessor",
    "INRZarrCodec",
    "StreamError",
    "decode_block",
    "decode_counter",
    "find_band_dim",
    "inspect",
    "open_zarr",
]

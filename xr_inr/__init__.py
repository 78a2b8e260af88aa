"""xr-inr: hyperspectral compression with implicit neural representations.

``import xr_inr`` registers the ``xr_inr`` numcodecs codec. Decoding needs
numpy only; encoding imports torch when it first fits a network.
"""

from numcodecs.registry import register_codec

from .bitstream import StreamError
from .codec import BudgetWarning, INRCodec, decode_block, inspect

register_codec(INRCodec)

__all__ = ["BudgetWarning", "INRCodec", "StreamError", "decode_block", "inspect"]

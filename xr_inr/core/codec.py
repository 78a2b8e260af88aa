"""``INRCodec``: the numcodecs codec that turns a hyperspectral block into a neural stream.

The codec is its configuration: the constructor checks the options, and
``encode``/``decode`` hand the block to :mod:`xr_inr.core.encode` and
:mod:`xr_inr.core.decode`. Two methods (:mod:`xr_inr.methods`): "grid"
(default; latent grids, a learned spectral basis and an autoregressive
entropy model) and "siren" (the paper's SIREN with float16 weights).
Encoding fits with torch (imported only when encoding); decoding needs numpy
alone.
"""

from __future__ import annotations

import math

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like, ndarray_copy

from .decode import check_layout, check_nbytes, decode_block
from .encode import encode_block, valid_extent, validated_block
from .quality import check_target, encode_to_psnr
from .stream import DTYPE_CODES

METHODS = ("grid", "siren")
EFFORTS = ("fast", "default", "best")
STEPS = {"grid": {"fast": 100, "default": 1000, "best": 2000}, "siren": {"fast": 500, "default": 2000, "best": 4000}}
"""Adam steps of the (final) fit for each method and effort (measured for "grid": docs/method.md)."""
DEFAULT_LR = {"grid": 1e-2, "siren": 2e-4}
DEFAULT_BPPPB = 0.1
"""The rate when neither ``bpppb`` nor ``psnr`` is given."""
MAX_BPPPB = 64.0
"""Largest budget: a float64 value's bits (more buys nothing, and a network sized for it
would not fit in memory: SIREN at 1e9 bpppb asked torch for 111 GB)."""


class INRCodec(Codec):
    """Compress 3-D hyperspectral blocks with an overfitted neural representation.

    Parameters
    ----------
    bpppb : bit budget per pixel per band, counting every stored byte
        (default 0.1 when ``psnr`` is not given).
    psnr : a quality target instead of a budget, in dB: each block gets the
        smallest stream found whose PSNR (R = max - min of the block's valid
        values) meets it, the rate searched with several encodes
        (:mod:`xr_inr.core.quality`). Give ``bpppb`` or ``psnr``, not both.
        Decoding never needs it.
    band_axis : axis of the block that holds the bands (0 for (band, y, x)).
    method : "grid" (default): multi-resolution latent grids, a synthesis MLP
        and a PCA-initialised spectral basis learned jointly, rate-distortion
        trained and entropy coded (docs/method.md); "siren": the paper's
        method (fp16 SIREN weights).
    components : "grid" only: basis vectors; None chooses the architecture
        for the budget and the block (:func:`xr_inr.methods.grid.fitting.block_spec`).
    depth, width : "siren" only: fix the architecture instead of searching it (either or both).
    steps : Adam steps of the (final) fit; None: the effort's (:data:`STEPS`).
    search_steps : "siren" only: steps of the architecture search's first round
        (successive halving, see :func:`xr_inr.methods.siren.fitting.search_and_fit`).
    max_depth : "siren" only: deepest architecture the search tries.
    lr : learning rate; None: 1e-2 for "grid", 2e-4 (the paper's) for "siren".
    batch_size, seed, device : optimiser settings (batch_size, "siren" only:
        None = full batch; device None = CUDA when available, else CPU).
    fill_value : the Zarr array's fill value, when Zarr itself calls ``encode``:
        trailing rows, columns or bands made of it only (the padding of an edge
        chunk) are left out of the fit and restored exactly (``"NaN"`` or NaN
        for float arrays). None (default): every element is fitted.
    effort : "fast", "default" or "best": encode time against quality, by the
        number of fitting steps (grid: 100, 1000, 2000; siren: 500, 2000, 4000),
        unless ``steps`` is given; "best" also picks the grid's architecture
        among its neighbours by brief fits (:func:`xr_inr.methods.grid.fitting.searched_spec`,
        unless ``components`` is given); every effort rounds the grid's latents again after
        packing, "fast" only in small blocks (:data:`xr_inr.methods.grid.fitting.ROUNDING_PASSES`).
        Decoding never needs it.
    chunk_shape, dtype : the Zarr array's chunk shape and dtype, given together
        (``to_zarr`` sets them for Zarr format 2, whose compressor gets no chunk
        spec): ``decode`` refuses a stream of another layout
        (:class:`~xr_inr.core.decode.LayoutError`) before decoding it, where Zarr
        would reshape or view one of the same byte size silently, and
        ``encode`` a block of another shape. None (default): not checked.
    """

    codec_id = "xr_inr"
    _cannot_encode: str | None = None
    """Why this codec (read from a stored config by :meth:`from_config`) refuses to encode."""

    def __init__(
        self,
        bpppb: float | None = None,
        band_axis: int = 0,
        method: str = "grid",
        components: int | None = None,
        depth: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        search_steps: int = 200,
        max_depth: int = 5,
        lr: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        device: str | None = None,
        fill_value: float | str | None = None,
        psnr: float | None = None,
        chunk_shape: tuple[int, ...] | None = None,
        dtype: str | None = None,
        effort: str = "default",
    ):
        if bpppb is not None and psnr is not None:
            raise ValueError(f"give bpppb (a rate) or psnr (a quality target), not both: got bpppb={bpppb!r}, "
                             f"psnr={psnr!r}")
        if psnr is not None:
            psnr = check_target(psnr)
        elif bpppb is None:
            bpppb = DEFAULT_BPPPB
        if bpppb is not None and not (isinstance(bpppb, (int, float)) and math.isfinite(bpppb) and bpppb > 0):
            raise ValueError(f"bpppb must be a positive number, got {bpppb!r}")
        if bpppb is not None and bpppb > MAX_BPPPB:
            raise ValueError(f"bpppb {bpppb!r} is above {MAX_BPPPB:g}, the bits of a float64 value")
        if band_axis not in (0, 1, 2, -1, -2, -3):
            raise ValueError(f"band_axis must be an axis of a 3-D block, got {band_axis!r}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        for name, value in (("depth", depth), ("width", width), ("components", components)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if method == "grid" and (depth is not None or width is not None or batch_size is not None):
            raise ValueError("depth, width and batch_size are options of method='siren'")
        if method == "siren" and components is not None:
            raise ValueError("components is an option of method='grid'")
        if effort not in EFFORTS:
            raise ValueError(f"unknown effort {effort!r}; choose from {EFFORTS}")
        steps = STEPS[method][effort] if steps is None else steps
        lr = DEFAULT_LR[method] if lr is None else lr
        if steps < 1 or search_steps < 0 or max_depth < 1:
            raise ValueError("steps and max_depth must be >= 1, search_steps >= 0")
        self.bpppb = None if bpppb is None else float(bpppb)
        self.psnr = psnr
        self.effort = effort
        self.band_axis = band_axis % 3
        self.method = method
        self.components = components
        self.depth = depth
        self.width = width
        self.steps = int(steps)
        self.search_steps = int(search_steps)
        self.max_depth = int(max_depth)
        self.lr = float(lr)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.device = device
        self.fill_value = None if fill_value is None else float(fill_value)
        self.chunk_shape, self.dtype = _layout(chunk_shape, dtype)

    @classmethod
    def from_config(cls, config: dict) -> INRCodec:
        """The codec of a stored config, for reading (numcodecs ``get_codec`` calls this).

        Decoding needs no setting (a stream describes itself) but ``band_axis``
        and, where stored, ``chunk_shape`` and ``dtype`` (checked against each stream):
        settings only encoding uses are not checked here, so a store written by
        a newer version (an unknown key) or with odd encode settings still
        reads. Encoding with such a codec raises, naming the problem.
        """
        config = {k: v for k, v in config.items() if k != "id"}
        try:
            return cls(**config)
        except (TypeError, ValueError) as err:
            # what decoding reads (the band axis, the chunk layout) must be valid
            codec = cls(band_axis=config.get("band_axis", 0), chunk_shape=config.get("chunk_shape"),
                        dtype=config.get("dtype"))
            codec._cannot_encode = f"the stored codec config cannot encode: {err}"
            codec._stored = config
            return codec

    def _check_can_encode(self) -> None:
        if self._cannot_encode is not None:
            raise ValueError(self._cannot_encode)

    def get_config(self) -> dict:
        if self._cannot_encode is not None:  # kept as stored
            return {"id": self.codec_id, **self._stored}
        config = {"id": self.codec_id}
        for key in ("bpppb", "band_axis", "method", "components", "depth", "width", "steps", "search_steps",
                    "max_depth", "lr", "batch_size", "seed", "device"):
            config[key] = getattr(self, key)
        if self.psnr is not None:  # encode-only, absent otherwise: configs without a target stay as they were
            config["psnr"] = self.psnr
        if self.effort != "default":  # encode-only, recorded where chosen
            config["effort"] = self.effort
        if self.fill_value is not None:  # JSON has no NaN: stored as the string "NaN"
            config["fill_value"] = "NaN" if math.isnan(self.fill_value) else self.fill_value
        if self.chunk_shape is not None:
            config.update(chunk_shape=list(self.chunk_shape), dtype=self.dtype)
        return config

    def __repr__(self) -> str:
        rate = f"bpppb={self.bpppb}" if self.psnr is None else f"psnr={self.psnr}"
        return f"INRCodec({rate}, band_axis={self.band_axis}, method={self.method!r})"

    # -- encoding (torch, imported when a network is first fitted) ---------

    def encode(self, buf) -> bytes:
        self._check_can_encode()
        block = validated_block(buf)
        if self.chunk_shape is not None and block.shape != self.chunk_shape:
            raise ValueError(f"a {block.shape} block given to a codec of {self.chunk_shape} chunks")
        if self.fill_value is None:
            return self._encode(block)
        return self.encode_padded(block, self.fill_value)

    def encode_padded(self, chunk, fill_value: float) -> bytes:
        """Encode a full chunk whose trailing slices equal to ``fill_value`` are padding.

        Used when Zarr pads an edge chunk: the padding (or any trailing rows,
        columns or bands holding nothing but the fill value, which it restores
        exactly) is left out of the fit and out of the budget.
        """
        self._check_can_encode()
        chunk = validated_block(chunk)
        valid = valid_extent(chunk, fill_value)
        if valid == chunk.shape or min(valid) == 0:
            return self._encode(chunk)
        region = chunk[tuple(slice(0, n) for n in valid)]
        return self._encode(region, padded_shape=chunk.shape, fill_value=fill_value)

    def encode_block(self, block, *, padded_shape=None, fill_value: float | None = None,
                     mask_fill: bool = False) -> bytes:
        """Encode ``block`` (the valid region of a chunk) to one stream.

        padded_shape : shape of the full chunk the stream decodes to; ``block``
            sits at its start on every axis and the rest is padding, never fitted.
        fill_value : value of the padding, and of the masked elements on decode.
        mask_fill : also leave the elements equal to ``fill_value`` (nodata) out
            of the fit; they decode to exactly ``fill_value``.

        The bit budget and reported bpppb count the elements of ``block`` only;
        so does a PSNR target (its R and MSE).
        """
        self._check_can_encode()
        return self._encode(block, padded_shape=padded_shape, fill_value=fill_value, mask_fill=mask_fill)

    def _encode(self, block, **where) -> bytes:
        """One stream: at the budget, or the smallest found meeting the PSNR target."""
        if self.psnr is None:
            return encode_block(self, block, **where)
        return encode_to_psnr(self, block, **where).stream

    # -- decoding ---------------------------------------------------------

    def decode(self, buf, out=None):
        if self.chunk_shape is not None:
            check_layout(buf, self.chunk_shape, self.dtype)
        if out is not None:  # its size bounds what the stream may declare, checked before decoding
            check_nbytes(buf, ensure_ndarray_like(out).nbytes)
        block = decode_block(buf)
        if out is not None:
            return ndarray_copy(block, out)
        return block


def _layout(chunk_shape, dtype) -> tuple[tuple[int, ...] | None, str | None]:
    """``chunk_shape`` and ``dtype`` checked (both or neither; 3 positive sizes, a dtype streams hold)."""
    if chunk_shape is None and dtype is None:
        return None, None
    if chunk_shape is None or dtype is None:
        raise ValueError("chunk_shape and dtype go together (the Zarr array's chunk layout)")
    try:
        shape = tuple(int(n) for n in chunk_shape)
        dtype = np.dtype(dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid chunk layout {chunk_shape!r}, {dtype!r}: {err}") from None
    if len(shape) != 3 or min(shape) < 1 or dtype not in DTYPE_CODES:
        raise ValueError(f"invalid chunk layout {chunk_shape!r}, {dtype!r}: 3 positive sizes and a dtype of "
                         f"{', '.join(str(d) for d in DTYPE_CODES)}")
    return shape, str(dtype)

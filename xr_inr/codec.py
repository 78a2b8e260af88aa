"""``INRCodec``: the numcodecs codec that turns a hyperspectral block into a neural stream.

Two methods: "grid" (default; latent grids, a learned spectral basis and an
autoregressive entropy model, :mod:`xr_inr.grid_codec`) and "siren" (the
paper's SIREN with float16 weights). Encoding fits with torch (imported only
when encoding); decoding needs numpy alone.
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ndarray_copy

from . import bitstream as bs
from .model import SirenSpec, axis_coords, evaluate, flatten_params, grid, largest_width, unflatten_params

METHODS = ("grid", "siren")
DEFAULT_STEPS = {"grid": 1000, "siren": 2000}
DEFAULT_LR = {"grid": 1e-2, "siren": 2e-4}


class BudgetWarning(UserWarning):
    """The block is too small for the bit budget to hold any network; it was stored above budget."""


class INRCodec(Codec):
    """Compress 3-D hyperspectral blocks with an overfitted neural representation.

    Parameters
    ----------
    bpppb : bit budget per pixel per band, counting every stored byte.
    band_axis : axis of the block that holds the bands (0 for (band, y, x)).
    method : "grid" (default): multi-resolution latent grids, a synthesis MLP
        and a PCA-initialised spectral basis learned jointly, rate-distortion
        trained and entropy coded (docs/method.md); "siren": the paper's
        method (fp16 SIREN weights).
    components : "grid" only: basis vectors; None chooses the architecture
        for the budget (:data:`xr_inr.grid_codec.ARCHITECTURES`).
    depth, width : "siren" only: fix the architecture instead of searching it (either or both).
    steps : Adam steps of the (final) fit; None: 1000 for "grid", 2000 for "siren".
    search_steps : "siren" only: steps of the architecture search's first round
        (successive halving, see :func:`xr_inr.fitting.search_and_fit`).
    max_depth : "siren" only: deepest architecture the search tries.
    lr : learning rate; None: 1e-2 for "grid", 2e-4 (the paper's) for "siren".
    batch_size, seed, device : optimiser settings (batch_size, "siren" only:
        None = full batch; device None = CUDA when available, else CPU).
    fill_value : the Zarr array's fill value, when Zarr itself calls ``encode``:
        trailing rows, columns or bands made of it only (the padding of an edge
        chunk) are left out of the fit and restored exactly (``"NaN"`` or NaN
        for float arrays). None (default): every element is fitted.
    """

    codec_id = "xr_inr"

    def __init__(
        self,
        bpppb: float = 0.1,
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
    ):
        if not (isinstance(bpppb, (int, float)) and math.isfinite(bpppb) and bpppb > 0):
            raise ValueError(f"bpppb must be a positive number, got {bpppb!r}")
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
        steps = DEFAULT_STEPS[method] if steps is None else steps
        lr = DEFAULT_LR[method] if lr is None else lr
        if steps < 1 or search_steps < 0 or max_depth < 1:
            raise ValueError("steps and max_depth must be >= 1, search_steps >= 0")
        self.bpppb = float(bpppb)
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

    def get_config(self) -> dict:
        config = {"id": self.codec_id}
        for key in ("bpppb", "band_axis", "method", "components", "depth", "width", "steps", "search_steps",
                    "max_depth", "lr", "batch_size", "seed", "device"):
            config[key] = getattr(self, key)
        if self.fill_value is not None:  # JSON has no NaN: stored as the string "NaN"
            config["fill_value"] = "NaN" if math.isnan(self.fill_value) else self.fill_value
        return config

    def __repr__(self) -> str:
        return f"INRCodec(bpppb={self.bpppb}, band_axis={self.band_axis}, method={self.method!r})"

    # -- encoding ---------------------------------------------------------

    def encode(self, buf) -> bytes:
        block = _validated_block(buf)
        if self.fill_value is None:
            return self.encode_block(block)
        return self.encode_padded(block, self.fill_value)

    def encode_padded(self, chunk, fill_value: float) -> bytes:
        """Encode a full chunk whose trailing slices equal to ``fill_value`` are padding.

        Used when Zarr pads an edge chunk: the padding (or any trailing rows,
        columns or bands holding nothing but the fill value, which it restores
        exactly) is left out of the fit and out of the budget.
        """
        chunk = _validated_block(chunk)
        valid = valid_extent(chunk, fill_value)
        if valid == chunk.shape or min(valid) == 0:
            return self.encode_block(chunk)
        region = chunk[tuple(slice(0, n) for n in valid)]
        return self.encode_block(region, padded_shape=chunk.shape, fill_value=fill_value)

    def encode_block(self, block, *, padded_shape=None, fill_value: float | None = None,
                     mask_fill: bool = False) -> bytes:
        """Encode ``block`` (the valid region of a chunk) to one stream.

        padded_shape : shape of the full chunk the stream decodes to; ``block``
            sits at its start on every axis and the rest is padding, never fitted.
        fill_value : value of the padding, and of the masked elements on decode.
        mask_fill : also leave the elements equal to ``fill_value`` (nodata) out
            of the fit; they decode to exactly ``fill_value``.

        The bit budget and reported bpppb count the elements of ``block`` only.
        """
        block = _validated_block(block)
        padded = tuple(block.shape) if padded_shape is None else tuple(int(n) for n in padded_shape)
        if len(padded) != 3 or any(p < n for p, n in zip(padded, block.shape, strict=True)):
            raise ValueError(f"padded shape {padded_shape} does not hold a block of shape {block.shape}")
        if max(padded) >= 2**32:
            raise ValueError(f"chunk axis too long for the stream format: {padded}")
        has_fill = fill_value is not None or padded != block.shape
        if has_fill:
            if fill_value is None:
                raise ValueError("a padded block needs a fill_value")
            fill_value = float(fill_value)
            if block.dtype.kind in "iu":
                info = np.iinfo(block.dtype)
                if not (math.isfinite(fill_value) and info.min <= fill_value <= info.max):
                    raise ValueError(f"fill value {fill_value} does not fit {block.dtype}")
            elif math.isinf(fill_value):
                raise ValueError("the fill value cannot be +/-inf")
        cube = np.moveaxis(block, self.band_axis, 0).astype(np.float64)
        nan = np.isnan(cube)
        if mask_fill and has_fill and not math.isnan(fill_value):
            nan |= cube == fill_value
        finite = cube[~nan]
        has_nan = bool(nan.any()) and finite.size > 0
        mask = bs.pack_mask(nan) if has_nan else b""

        def stream(method: bs.Method, payload: bytes) -> bytes:
            header = bs.Header(method, block.dtype, self.band_axis, block.shape, has_nan,
                               padded if has_fill else None, fill_value if has_fill else None)
            return bs.seal(bs.pack_header(header) + mask + payload)

        if finite.size == 0:
            return stream(bs.Method.CONSTANT, bs.pack_constant(fill_value if has_fill else math.nan))
        lo, hi = float(finite.min()), float(finite.max())
        if lo == hi:
            return stream(bs.Method.CONSTANT, bs.pack_constant(lo))
        offset, scale = lo / 2 + hi / 2, hi / 2 - lo / 2  # halves: no overflow near float64's max
        normalised = np.where(nan, 0.0, (cube - offset) / scale).astype(np.float32)

        budget_bytes = math.floor(self.bpppb * block.size / 8)
        fixed = (bs.HEADER_BYTES + (bs.FILL_BYTES if has_fill else 0) + len(mask)
                 + bs.SIREN_HEAD_BYTES + bs.CRC_BYTES)
        if self.method == "grid":
            from .grid_codec import choose_spec, estimated_param_bits

            smallest = estimated_param_bits(choose_spec(*cube.shape, 0.0, self.components)) / 8
            has_network = smallest + fixed < 2 * finite.size  # else float16 values take less
        else:
            candidates = self._candidates(cube.shape[0], (budget_bytes - fixed) // 2)
            has_network = bool(candidates)
        if not has_network:
            raw = stream(bs.Method.RAW, bs.pack_raw(offset, scale, normalised))
            if len(raw) > budget_bytes:
                warnings.warn(
                    f"a {block.shape} block cannot hold a network within {self.bpppb} bpppb "
                    f"({budget_bytes} bytes); stored as float16 values at "
                    f"{8 * len(raw) / block.size:.3g} bpppb",
                    BudgetWarning,
                    stacklevel=2,
                )
            return raw

        if self.method == "grid":
            return self._encode_grid(cube, nan, has_nan, lo, hi, budget_bytes, stream, has_fill, mask, block)

        from .fitting import search_and_fit  # torch is needed for encoding only

        result = search_and_fit(
            normalised,
            None if not has_nan else ~nan,
            candidates,
            steps=self.steps,
            search_steps=self.search_steps,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
        )
        flat = flatten_params(result.spec, result.layers)
        siren = stream(bs.Method.SIREN, bs.pack_siren(result.spec, offset, scale, flat))
        if len(siren) > budget_bytes:  # only a fixed depth and width can overshoot
            warnings.warn(
                f"depth={self.depth}, width={self.width} needs {8 * len(siren) / block.size:.3g} bpppb, "
                f"over the {self.bpppb} bpppb budget",
                BudgetWarning,
                stacklevel=2,
            )
        return siren

    def _encode_grid(self, cube, nan, has_nan, lo, hi, budget_bytes, stream, has_fill, mask, block) -> bytes:
        from .grid_codec import encode_grid  # torch is needed for encoding only

        scale = hi - lo
        normalised = np.where(nan, 0.0, (cube - lo) / scale)
        fixed = (bs.HEADER_BYTES + (bs.FILL_BYTES if has_fill else 0) + len(mask)
                 + bs.AFFINE_BYTES + bs.CRC_BYTES)
        payload = encode_grid(normalised, ~nan if has_nan else None, 8 * budget_bytes, 8 * fixed,
                              components=self.components, steps=self.steps, lr=self.lr,
                              seed=self.seed, device=self.device)
        grid = stream(bs.Method.GRID, bs.pack_grid(lo, scale, payload))
        if len(grid) > budget_bytes:
            warnings.warn(
                f"the grid stream of a {block.shape} block takes {8 * len(grid) / block.size:.3g} bpppb, "
                f"over the {self.bpppb} bpppb budget: the block is too small for this rate",
                BudgetWarning,
                stacklevel=3,
            )
        return grid

    def _candidates(self, bands: int, max_params: int) -> list[SirenSpec]:
        """Architectures to try: the fixed one, or every valid (depth, width) under the budget."""
        if self.depth is not None and self.width is not None:
            return [SirenSpec(self.depth, self.width, bands)]
        depths = [self.depth] if self.depth is not None else range(1, self.max_depth + 1)
        specs = []
        for depth in depths:
            width = self.width if self.width is not None else largest_width(depth, bands, max_params)
            if width >= 1 and SirenSpec(depth, width, bands).n_params <= max_params:
                specs.append(SirenSpec(depth, width, bands))
        return specs

    # -- decoding ---------------------------------------------------------

    def decode(self, buf, out=None):
        block = decode_block(buf)
        if out is not None:
            return ndarray_copy(block, out)
        return block


def _validated_block(buf) -> np.ndarray:
    block = np.asarray(buf)
    if block.dtype not in bs.DTYPE_CODES:
        supported = ", ".join(str(d) for d in bs.DTYPE_CODES)
        raise TypeError(f"unsupported dtype {block.dtype}; supported: {supported}")
    if block.ndim != 3:
        raise ValueError(f"expected a 3-D block (bands and two spatial axes), got {block.ndim}-D shape {block.shape}")
    if block.size == 0:
        raise ValueError(f"cannot encode an empty block of shape {block.shape}")
    if max(block.shape) >= 2**32:
        raise ValueError(f"block axis too long for the stream format: {block.shape}")
    if block.dtype.kind == "f" and np.isinf(block).any():
        raise ValueError("block contains +/-inf values, which cannot be represented")
    return block


class DecodeCounter:
    """How many streams :func:`decode_block` decoded, and how many values it produced.

    ``blocks`` counts calls (whole chunks and sampled ones alike), ``values``
    the elements returned. Thread-safe; ``reset()`` starts again from zero.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.blocks = 0
        self.values = 0

    def add(self, values: int) -> None:
        with self._lock:
            self.blocks += 1
            self.values += values

    def reset(self) -> None:
        with self._lock:
            self.blocks = 0
            self.values = 0


decode_counter = DecodeCounter()
"""Process-wide count of decoded streams (see :class:`DecodeCounter`)."""


def valid_extent(chunk: np.ndarray, fill_value: float) -> tuple[int, ...]:
    """Shape of ``chunk`` without its trailing slices made only of ``fill_value`` (NaN matches NaN)."""
    is_fill = np.isnan(chunk) if math.isnan(fill_value) else chunk == fill_value
    extent = []
    for axis in range(chunk.ndim):
        other = tuple(a for a in range(chunk.ndim) if a != axis)
        keep = ~is_fill.all(axis=other)
        extent.append(int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0)
    return tuple(extent)


def decode_block(buf, ys: np.ndarray | None = None, xs: np.ndarray | None = None) -> np.ndarray:
    """Decode a stream, on its own pixel grid or at chosen positions.

    ``ys``/``xs`` are (fractional) pixel positions along the block's two spatial
    axes (0 ... n - 1 of the chunk); a SIREN is evaluated there, other methods
    and the NaN mask are sampled at the nearest pixel. A padded stream (an edge
    chunk) returns its fill value at positions whose nearest pixel is padding.
    The result has the stored axis order and dtype, with the spatial axes of
    length ``len(ys)``/``len(xs)``.
    """
    reader = bs.Reader(ensure_bytes(buf))
    header = reader.header
    bands, h, w = header.block_shape
    out_bands, out_h, out_w = _block_layout(header.out_shape, header.band_axis)
    ys = np.arange(out_h, dtype=np.float64) if ys is None else np.asarray(ys, dtype=np.float64).ravel()
    xs = np.arange(out_w, dtype=np.float64) if xs is None else np.asarray(xs, dtype=np.float64).ravel()
    if header.has_fill:  # positions on the padding are not evaluated
        inside_y, inside_x = np.rint(ys) < h, np.rint(xs) < w
        out_ys, out_xs, ys, xs = ys, xs, ys[inside_y], xs[inside_x]
    rows = np.clip(np.rint(ys), 0, h - 1).astype(np.intp)
    cols = np.clip(np.rint(xs), 0, w - 1).astype(np.intp)
    mask = reader.mask()

    if header.method == bs.Method.CONSTANT:
        values = np.full((bands, len(ys), len(xs)), reader.constant())
    elif header.method == bs.Method.RAW:
        offset, scale, normalised = reader.raw()
        normalised = normalised.reshape(bands, h, w)[:, rows][:, :, cols]
        values = offset + scale * normalised.astype(np.float64)
    elif header.method == bs.Method.GRID:
        from .grid_codec import decode_grid

        offset, scale, payload = reader.grid()
        values = offset + scale * decode_grid(payload, bands, h, w, ys, xs)
    else:
        spec, offset, scale, flat = reader.siren()
        coords = grid(_to_unit(ys, h), _to_unit(xs, w))
        predicted = evaluate(spec, unflatten_params(spec, flat), coords)
        values = offset + scale * predicted.T.reshape(bands, len(ys), len(xs)).astype(np.float64)
    reader.finish()

    missing = math.nan if header.fill_value is None else header.fill_value
    if mask is not None:
        values[mask[:, rows][:, :, cols]] = missing
    if header.has_fill:
        full = np.full((out_bands, len(out_ys), len(out_xs)), missing)
        full[np.ix_(np.arange(bands), np.flatnonzero(inside_y), np.flatnonzero(inside_x))] = values
        values = full
    decode_counter.add(values.size)
    return _restore(values, header)


def _block_layout(shape: tuple[int, int, int], band_axis: int) -> tuple[int, int, int]:
    rest = [n for axis, n in enumerate(shape) if axis != band_axis]
    return (shape[band_axis], rest[0], rest[1])


def _to_unit(positions: np.ndarray, n: int) -> np.ndarray:
    """Pixel positions 0 ... n - 1 to network coordinates -1 ... 1 (as :func:`axis_coords`)."""
    if n == 1:
        return np.zeros(len(positions), dtype=np.float32)
    if len(positions) == n and np.array_equal(positions, np.arange(n)):
        return axis_coords(n)
    return (positions * (2.0 / (n - 1)) - 1.0).astype(np.float32)


def _restore(values: np.ndarray, header: bs.Header) -> np.ndarray:
    """Back to the stored axis order and dtype (integers rounded and clipped)."""
    values = np.moveaxis(values, 0, header.band_axis)
    dtype = header.dtype
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def inspect(buf) -> dict:
    """What a stream holds: method, shape, dtype, architecture, size and rate (bpppb)."""
    reader = bs.Reader(ensure_bytes(buf))
    header = reader.header
    size = len(ensure_bytes(buf))
    info = {
        "method": header.method.name.lower(),
        "shape": header.out_shape,
        "valid_shape": header.shape,
        "fill_value": header.fill_value,
        "dtype": str(header.dtype),
        "band_axis": header.band_axis,
        "has_nan": header.has_nan,
        "nbytes": size,
        "bpppb": 8 * size / math.prod(header.shape),  # over the valid (fitted) elements
    }
    if header.method == bs.Method.SIREN:
        reader.mask()
        spec = reader.siren()[0]
        info.update(depth=spec.depth, width=spec.width, n_params=spec.n_params)
    elif header.method == bs.Method.GRID:
        from .grid_codec import describe_payload

        reader.mask()
        described = describe_payload(reader.grid()[2], *header.block_shape)
        spec = described.pop("spec")
        info.update(components=spec.components, channels=spec.channels, hidden=spec.hidden,
                    arm_hidden=spec.arm_hidden, **described)
    return info

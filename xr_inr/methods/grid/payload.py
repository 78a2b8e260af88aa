"""Method "grid": choosing the model for a bit budget, quantising it, and its payload bytes.

Payload layout (little-endian), after the stream header:

    affine    offset, scale (2 x f64): the model predicts (value - offset) / scale
    head      components, hidden, arm_hidden, levels (4 x u8), channels (levels x u8),
              options (u8, format version 3 on: bit 0, the coefficient images'
              filters; version 4 on: bit 1, their latents pulled towards the coder's
              locations), coefficient step (f64)
    params    per parameter array its exponent e (values are integers times
              2**-e, i8) and Laplace scale index j (i8, see
              :mod:`xr_inr.core.laplace_tables`); then the length (u32) and the
              range-coded stream of every array's integers (offset index 0).
              The mean spectrum and basis vectors are coded as differences
              along the bands. The ARM's arrays share one exponent. The
              filters, when present, are one array (components x 9) after the basis,
              then the pulls, when present (components x 2).
    latents   length (u32) and range-coded stream of the latents
              (:func:`xr_inr.methods.grid.arm.encode_latents`)

:func:`decode` needs numpy and constriction only; the encoder
(:func:`xr_inr.methods.grid.fitting.encode`) fits with torch and packs with :func:`pack`.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

from ...core import entropy, stream
from ...core import laplace_tables as lt
from ...core.products import matmul
from ...core.stream import AFFINE, ByteCursor, StreamError
from . import arm as lc
from .model import GridSpec, pulled_latents, synthesis_inputs, synthesise, synthesised
from .solve import LinearParts, Projection, solved_linear_parts

_HEAD = struct.Struct("<BBBB")
_FILTERED = 1
"""Bit of the head's options byte (format version 3 on): each coefficient image has a 3 x 3 filter."""
_PULLED = 2
"""Bit of the head's options byte (format version 4 on): each coefficient image's latents are pulled
towards the entropy coder's locations (:func:`~xr_inr.methods.grid.model.pull_images`)."""
_ARRAY = struct.Struct("<bb")
_STREAM = struct.Struct("<I")

ARCHITECTURES = (  # (components, channels per level, synthesis width, ARM width), smallest first
    (3, (0,), 0, 8),
    (4, (0, 1, 1), 8, 8),
    (6, (0, 1, 1, 1), 12, 12),
    (8, (0, 1, 1), 8, 16),
    (12, (0, 1, 1), 8, 16),
    (16, (0, 1, 1), 8, 16),
    (20, (0, 1, 1), 8, 16),
)
"""From k = 8 on (blocks at 0.1 bpppb and more) the synthesis MLP is the k = 4 row's: wider ones (12, 16
and 24 units, more latent channels) cost more parameter bits than they bought there, and fitted
worse in 50 steps (docs/method.md, "The synthesis MLP stops growing")."""
FIXED_SHARE = 0.2
"""The largest architecture whose estimated parameter bits stay under this share of the budget is used,
with no more basis vectors than :func:`components_worth_coding` finds worth the latents' share of the budget."""


class GridStreamError(StreamError):
    """The grid payload does not decode (corrupt data or a mismatched entropy model)."""


def param_arrays(spec: GridSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every stored parameter array, in storage order."""
    arrays = [("mean", (spec.bands,))] + [(f"basis{r}", (spec.bands,)) for r in range(spec.components)]
    if spec.filtered:
        arrays.append(("filter", (spec.components, 9)))
    if spec.pulled:
        arrays.append(("pull", (spec.components, 2)))
    for prefix, shapes in (("synthesis", spec.synthesis_shapes()), ("arm", spec.arm_shapes())):
        for index, (out_f, in_f) in enumerate(shapes):
            arrays += [(f"{prefix}{index}.weight", (out_f, in_f)), (f"{prefix}{index}.bias", (out_f,))]
    return arrays


BASIS_VALUE_BITS = 4
"""Bits per stored value of the mean spectrum and basis vectors, as :func:`estimated_param_bits` guesses them."""

MIN_IMAGE_BITS = 0.2
"""Bits per pixel a coefficient image beyond the first :data:`SPECTRAL_IMAGES` must get to be worth decoding.
Every image costs the decoder the same work per pixel whatever its bits (its latents through the ARM and the
range coder, its column of the basis product): on Samson at 0.1 bpppb, the nine images under this added
0.13 dB for 1.3-1.5x the decode time (docs/method.md, "Images worth decoding")."""

SPECTRAL_IMAGES = 4
"""Images kept whenever their bits pay for their basis vectors, however few bits per pixel that is: the
first few carry a pixel's spectral shape (on Hydice's 81 odd bands at 0.05 bpppb, the fourth image, with
0.18 bits per pixel, took the mean SAM from 2.98 to 2.42 degrees and PSNR up 1 dB), and cost the decoder
least."""


def estimated_param_bits(spec: GridSpec) -> float:
    """A guess of the parameter bits before fitting: 6 bits per network weight or filter tap, 4 per
    basis value and the payload's heads (set a little above the parameter bytes of early encodes; at high
    fidelity the real ones can be larger, which :func:`pack_within_budget` corrects)."""
    n_net = sum(o * i + o for o, i in spec.synthesis_shapes() + spec.arm_shapes()) + 9 * spec.components * spec.filtered
    heads = _HEAD.size + len(spec.channels) + 1 + 8 + _ARRAY.size * len(param_arrays(spec)) + 2 * (_STREAM.size + 4)
    return 6 * n_net + BASIS_VALUE_BITS * (spec.components + 1) * spec.bands + 8 * heads


SCALAR_LOSS = math.pi * math.e / 6
"""Squared error of entropy-coded uniform scalar quantisation over the rate-distortion bound at the
same rate (high-rate theory: 1.53 dB, 0.25 bit per sample); the latents are so quantised."""


WATER_FILLING_SORTED = 4096
"""The fewest of a block's transform coefficients :func:`water_filling_bits` sorts (speed only: a sort of all
1.8 million of a 100 x 100 x 200 block's took 0.1 s, most of the water-filling's time)."""


def water_filling_bits(spectrum: np.ndarray, bits_per_pixel: float) -> np.ndarray:
    """Bits per pixel each coefficient image gets, by reverse water-filling over its transform coefficients.

    ``spectrum`` (images, coefficients per image): each image's squared transform coefficients
    (:func:`~xr_inr.methods.grid.fitting.coefficient_spectrum`, as many as the pixels they cover). Coded by
    an entropy-coded uniform scalar quantiser, a coefficient of power p costs 0.5 log2(SCALAR_LOSS p / theta)
    bits to reach a squared error theta when that is positive, and none otherwise; the water level theta is
    where these add up to ``bits_per_pixel`` per pixel.
    """
    live = SCALAR_LOSS * np.asarray(spectrum, np.float64)
    if not (live > 0).any() or bits_per_pixel <= 0:
        return np.zeros(live.shape[0])
    logs = np.log2(np.where(live > 0, live, np.nan))
    positive = logs[live > 0]
    # with the n largest coded, 0.5 (sum of those n - n log2 theta) = the bits: the level where the
    # n-th is still above theta and the (n+1)-th is not. Whether the n-th is above the level can only
    # turn false as n grows, so only the largest are sorted, twice as many as the coded ones at least
    # (about 0.6 per bit in blocks of 64 x 64 to 100 x 100 at 0.02 to 1 bpppb: two per bit to start with).
    largest = min(positive.size, max(WATER_FILLING_SORTED, math.ceil(2 * bits_per_pixel * live.shape[1])))
    while True:
        ranked = np.sort(np.partition(positive, positive.size - largest)[positive.size - largest:])[::-1]
        levels = (np.cumsum(ranked) - 2 * bits_per_pixel * live.shape[1]) / np.arange(1, ranked.size + 1)
        n = np.flatnonzero(levels < ranked)[-1]  # levels fall below the ranked values up to the n-th
        if largest == positive.size or n < largest // 2:
            return 0.5 * np.nan_to_num(np.maximum(logs - levels[n], 0)).sum(axis=1) / live.shape[1]
        largest = min(positive.size, 4 * largest)


def components_worth_coding(bits: np.ndarray, bands: int, pixels: int) -> int:
    """k from the :func:`water_filling_bits` of a block's coefficient images: those whose bits pay for
    their basis vector (:data:`BASIS_VALUE_BITS` per band) and, beyond the first :data:`SPECTRAL_IMAGES`,
    for their decoding (:data:`MIN_IMAGE_BITS` per pixel); at least 1."""
    paid = np.asarray(bits) * pixels >= BASIS_VALUE_BITS * bands
    worth = paid & (np.asarray(bits) >= MIN_IMAGE_BITS)
    return max(1, int(worth.sum()), min(int(paid.sum()), SPECTRAL_IMAGES))


def choose_spec(bands: int, height: int, width: int, budget_bits: float, components: int | None = None,
                spectrum: np.ndarray | None = None) -> GridSpec:
    """The architecture for a block and budget: the largest of :data:`ARCHITECTURES` whose estimated
    parameter bits stay under :data:`FIXED_SHARE` of the budget. ``components`` fixes k (the sizes
    still chosen by the share); else ``spectrum``, the transform coefficients of the block's
    coefficient images (:func:`xr_inr.methods.grid.fitting.coefficient_spectrum`), caps it at
    :func:`components_worth_coding` of their :func:`water_filling_bits` over the rest of the budget, and
    at the largest row's k (time grows with k): rows with more components are not tried, and the last
    row that is tried is tried again with that k."""
    if components is not None:
        candidates = [(components, *row[1:]) for row in ARCHITECTURES]
    else:
        pixels = height * width
        limit = None if spectrum is None else min(ARCHITECTURES[-1][0], components_worth_coding(
            water_filling_bits(spectrum, (1 - FIXED_SHARE) * budget_bits / pixels), bands, pixels))
        candidates = [row for row in ARCHITECTURES if limit is None or row[0] <= limit] or list(ARCHITECTURES[:1])
        if limit is not None:
            candidates = [(min(k, limit), *sizes) for k, *sizes in candidates] + [(limit, *candidates[-1][1:])]
    chosen = None
    for k, channels, hidden, arm_hidden in candidates:
        spec = GridSpec(bands, height, width, min(k, bands), channels, hidden, arm_hidden, filtered=True, pulled=True)
        if chosen is None or estimated_param_bits(spec) <= FIXED_SHARE * budget_bits:
            chosen = spec
    return chosen


def _quantise(values: np.ndarray, exponent: int) -> np.ndarray:
    return np.round(values * 2.0**exponent).astype(np.int64)


def _finest_exponent(tolerance: float, values: np.ndarray) -> int:
    """Smallest exponent e whose quantisation error (2**-e)**2 / 12 stays under ``tolerance``,
    capped so that the integers stay within +-2**12 (a small alphabet for the entropy coder)."""
    cap = math.floor(math.log2(2**12 / max(float(np.abs(values).max()), 1e-30)))
    return int(np.clip(math.ceil(-0.5 * math.log2(max(12 * tolerance, 1e-30))), -8, min(cap, 30)))


def _coarsest(good, finest: int, hint: int | None = None) -> int:
    """Smallest exponent in 2 ... ``finest`` for which ``good`` holds, by bisection (``good``
    is taken to hold at ``finest`` and to stay true once true, as a finer step only adds
    precision): about 5 tries, where a scan from 2 took up to 29. ``hint``, where the search
    probably ends, is tried first with its neighbour: 2 tries when it is the answer, the same answer
    either way."""
    lo, hi = 2, finest
    if hint is not None and lo <= hint < hi:
        if good(hint):
            if hint == lo or not good(hint - 1):
                return hint
            hi = hint - 1
        else:
            if hint + 1 == hi or good(hint + 1):
                return hint + 1
            lo = hint + 2
    while lo < hi:
        middle = (lo + hi) // 2
        if good(middle):
            hi = middle
        else:
            lo = middle + 1
    return hi


def quantised_parameters(fit, target: np.ndarray, valid: np.ndarray | None,
                         hint: dict | None = None) -> tuple[dict[str, tuple[int, np.ndarray]], float]:
    """Every parameter array as (exponent, integers), and the MSE the stream will decode to. The ARM is
    quantised first; then, where no element is masked, the pulls, filters, basis and mean are solved for
    the latents and the coder's locations (:func:`~xr_inr.methods.grid.solve.solved_linear_parts`). The
    step of each array is chosen for its effect:

    * ARM: the coarsest exponent that raises the latents' bits (exact integer model)
      by under 0.5 % (no finer than keeps its integers within +-2**13);
    * mean and basis: the added error stays ~1/50 of the MSE;
    * the coefficient images' pulls, then their filters: the coarsest exponent that raises the MSE by
      under 0.2 % (a few values per image: a finer step costs little);
    * synthesis MLP: the coarsest exponent that raises the MSE by under 1 %.

    ``hint``: the parameters of an earlier packing of the same model (:attr:`Packed.params`), whose
    exponents the searches try first (:func:`_coarsest`). Across the passes that round the latents
    again, 413 of 496 searches ended where the packing before's had (20 fits).
    """
    spec = fit.spec

    def hinted(name: str) -> int | None:
        return None if hint is None else hint[name][0]

    largest = max(max(np.abs(w).max(), np.abs(b).max()) for w, b in fit.arm)
    finest = int(np.clip(math.floor(math.log2((2**13 - 1) / max(largest, 1e-30))), 2, lc.MAX_EXPONENT))

    models = {}

    def model_at(e):  # the ARM quantised with exponent e, ready to code (each built once)
        if e not in models:
            models[e] = lc.CodingModel(lc.prepare_arm([(_quantise(w, e), _quantise(b, e)) for w, b in fit.arm], e), e)
        return models[e]

    base = lc.latent_bits(spec, model_at(finest), fit.latents)
    exponent = _coarsest(lambda e: lc.latent_bits(spec, model_at(e), fit.latents) <= 1.005 * base + 8, finest,
                         hinted("arm0.weight"))
    out = {}
    for index, (w, b) in enumerate(fit.arm):
        out[f"arm{index}.weight"] = (exponent, _quantise(w, exponent))
        out[f"arm{index}.bias"] = (exponent, _quantise(b, exponent))
    locations = lc.latent_locations(spec, model_at(exponent), fit.latents) if spec.pulled else None
    if valid is None:
        parts = solved_linear_parts(fit, target, locations)
    else:  # a masked block keeps its trained parts (their equations differ from band to band)
        parts = LinearParts(np.zeros((spec.components, 2)) if spec.pulled else None, fit.taps, fit.basis, fit.mean,
                            fit.mse)

    mse = max(parts.mse, 1e-12)
    out["mean"] = (_finest_exponent(mse / 50, parts.mean), None)
    rms = np.maximum(fit.coefficient_rms, 1e-12)
    for r in range(spec.components):
        out[f"basis{r}"] = (_finest_exponent(mse / (50 * spec.components * rms[r] ** 2), parts.basis[r]), None)
    for name in ["mean"] + [f"basis{r}" for r in range(spec.components)]:
        exponent = out[name][0]
        out[name] = (exponent, _quantise(parts.mean if name == "mean" else parts.basis[int(name[5:])], exponent))
    mean = out["mean"][1] * 2.0 ** -out["mean"][0]
    basis = np.stack([out[f"basis{r}"][1] * 2.0 ** -out[f"basis{r}"][0] for r in range(spec.components)])
    ys, xs = np.arange(spec.height, dtype=np.float64), np.arange(spec.width, dtype=np.float64)
    counted = np.ones(target.shape, bool) if valid is None else valid

    def model_mse(synthesis, taps, pull):  # what the stream decodes to
        latents = pulled_latents(spec, fit.latents, locations, pull) if spec.pulled else fit.latents
        values = synthesise(spec, latents, fit.step, synthesis, basis, mean, ys, xs, taps=taps)
        return float(np.mean((values - target)[counted] ** 2))

    def features(taps, pull):  # what the synthesis MLP reads
        latents = pulled_latents(spec, fit.latents, locations, pull) if spec.pulled else fit.latents
        return synthesis_inputs(spec, latents, fit.step, ys, xs, taps)

    projection = Projection(target.reshape(spec.bands, -1).T, mean, basis) if valid is None else None

    def searched_mse(synthesis, inputs):  # for the exponents: without a mask, from the coefficients alone
        coefficients = synthesised(spec, inputs, synthesis)
        if projection is not None:
            return projection.mse(coefficients)
        values = (matmul(basis.T, coefficients.T) + mean[:, None]).reshape(target.shape)
        return float(np.mean((values - target)[counted] ** 2))

    def layers_at(layers, exponent):
        return [(_quantise(w, exponent) * 2.0**-exponent, _quantise(b, exponent) * 2.0**-exponent) for w, b in layers]

    taps, pull = parts.taps, parts.pull
    if spec.pulled:
        base = searched_mse(fit.synthesis, features(taps, pull))
        exponent = _coarsest(lambda e: searched_mse(fit.synthesis, features(taps, _quantise(pull, e) * 2.0**-e))
                             <= 1.002 * base, 30, hinted("pull"))
        out["pull"] = (exponent, _quantise(pull, exponent))
        pull = out["pull"][1] * 2.0**-exponent
    if spec.filtered:
        base = searched_mse(fit.synthesis, features(taps, pull))
        exponent = _coarsest(lambda e: searched_mse(fit.synthesis, features(_quantise(taps, e) * 2.0**-e, pull))
                             <= 1.002 * base, 30, hinted("filter"))
        out["filter"] = (exponent, _quantise(taps, exponent))
        taps = out["filter"][1] * 2.0**-exponent
    synthesis = fit.synthesis
    if spec.hidden:
        inputs = features(taps, pull)  # the same for every try
        base = searched_mse(layers_at(fit.synthesis, 30), inputs)
        exponent = _coarsest(lambda e: searched_mse(layers_at(fit.synthesis, e), inputs) <= 1.01 * base, 30,
                             hinted("synthesis0.weight"))
        for index, (w, b) in enumerate(fit.synthesis):
            out[f"synthesis{index}.weight"] = (exponent, _quantise(w, exponent))
            out[f"synthesis{index}.bias"] = (exponent, _quantise(b, exponent))
        synthesis = layers_at(fit.synthesis, exponent)
    return out, model_mse(synthesis, taps, pull)


def dequantised_layers(params: dict, prefix: str, count: int):
    return [(params[f"{prefix}{i}.weight"][1] * 2.0 ** -params[f"{prefix}{i}.weight"][0],
             params[f"{prefix}{i}.bias"][1] * 2.0 ** -params[f"{prefix}{i}.bias"][0]) for i in range(count)]


def dequantised(params: dict, spec: GridSpec) -> tuple:
    """(mean, basis, filter taps or None, pulls or None, synthesis layers) of quantised ``params``."""
    def array(name):
        return params[name][1] * 2.0 ** -params[name][0]

    return (array("mean"), np.stack([array(f"basis{r}") for r in range(spec.components)]),
            array("filter") if spec.filtered else None, array("pull") if spec.pulled else None,
            dequantised_layers(params, "synthesis", len(spec.synthesis_shapes())))


def _pack_stream(encoder) -> bytes:
    data = entropy.stream_bytes(encoder)
    return _STREAM.pack(len(data)) + data


def arm_from_params(params: dict, spec: GridSpec) -> tuple[list, int]:
    """The ARM ready for :func:`~xr_inr.methods.grid.arm.arm_integers` (see
    :func:`~xr_inr.methods.grid.arm.prepare_arm`) and its shared exponent."""
    names = [f"arm{i}.{kind}" for i in range(len(spec.arm_shapes())) for kind in ("weight", "bias")]
    exponents = {params[name][0] for name in names}
    if len(exponents) != 1 or not 0 <= min(exponents) <= lc.MAX_EXPONENT:
        raise GridStreamError("the ARM's arrays need one exponent in [0, 16]")
    if max(np.abs(params[name][1]).max() for name in names) >= 2**15:
        raise GridStreamError("an ARM weight is out of range")
    ints = [params[name][1] for name in names]
    exponent = exponents.pop()
    return lc.prepare_arm(list(zip(ints[::2], ints[1::2])), exponent), exponent


class Packed(NamedTuple):
    """A fit's stream: the MSE it decodes to, its payload, the fit, and the fit's quantised parameters."""

    mse: float
    payload: bytes
    fit: object
    params: dict


def packed(fit, target: np.ndarray, valid: np.ndarray | None, hint: dict | None = None) -> Packed:
    """The stream of a trained model, its parameters quantised for ``target`` (:func:`quantised_parameters`;
    ``hint``: the parameters of an earlier packing of the same model, to search from)."""
    params, mse = quantised_parameters(fit, target, valid, hint)
    return Packed(mse, pack(fit.spec, fit.step, params, fit.latents), fit, params)


def pack(spec: GridSpec, step: float, params: dict, latents: list[np.ndarray]) -> bytes:
    """The payload bytes of a quantised model (layout in the module docstring)."""
    head = _HEAD.pack(spec.components, spec.hidden, spec.arm_hidden, len(spec.channels))
    head += bytes(spec.channels) + bytes([_FILTERED * spec.filtered | _PULLED * spec.pulled]) + struct.pack("<d", step)
    symbols, scales, array_heads = [], [], b""
    for name, _ in param_arrays(spec):
        exponent, ints = params[name]
        ints = ints.reshape(-1)
        if name == "mean" or name.startswith("basis"):
            ints = np.diff(ints, prepend=0)
        scale_index = int(np.clip(round(8 * math.log2(max(np.abs(ints).mean(), 2.0**-4))), -32, 96))
        array_heads += _ARRAY.pack(exponent, scale_index)
        symbols.append(ints)
        scales.append(np.full(ints.size, scale_index))
    params_coder = entropy.new_encoder()
    scales = np.concatenate(scales)
    entropy.encode_residuals(params_coder, np.concatenate(symbols).astype(np.int64), lt.table_index(scales, 0))
    latent_coder = entropy.new_encoder()
    lc.encode_latents(spec, *arm_from_params(params, spec), latents, latent_coder)
    return head + array_heads + _pack_stream(params_coder) + _pack_stream(latent_coder)


def _cursor(payload: bytes) -> ByteCursor:
    return ByteCursor(payload, 0, GridStreamError, "grid payload ends early")


def _read_head(reader: ByteCursor, bands: int, height: int, width: int, version: int) -> tuple[GridSpec, float]:
    components, hidden, arm_hidden, levels = reader.unpack(_HEAD)
    channels = tuple(reader.take(levels))
    options = reader.take(1)[0] if version >= 3 else 0
    if options & ~(_FILTERED | _PULLED * (version >= 4)):
        raise GridStreamError(f"unknown grid options {options:#04x} for format version {version}")
    (step,) = struct.unpack("<d", reader.take(8))
    try:
        spec = GridSpec(bands, height, width, components, channels, hidden, arm_hidden, bool(options & _FILTERED),
                        bool(options & _PULLED))
    except ValueError as exc:
        raise GridStreamError(str(exc)) from None
    _check_sizes(spec)
    return spec, step


MAX_PIXELS = 2**24
"""The most pixels (height x width, 4096 x 4096) of a grid block: decoding holds 96 bytes of
context indices per latent grid point (:func:`~xr_inr.methods.grid.arm.phases`)."""
LATENT_WORK = 1024
"""A latent's decoding besides the ARM's products (range decoding, its context gathered and
log-compressed), counted as this many multiply-adds: 250-400 ns against 0.15-0.3 ns per
multiply-add of the ARM and synthesis MLP (reference machine, docs/format.md "Decoder limits")."""
CHANNEL_WORK = 64
"""A latent channel's interpolation at one pixel, counted likewise (3-23 ns measured)."""


def latent_count(spec: GridSpec) -> int:
    """Latents of every level and grid, the coefficient images included."""
    return sum(c * math.prod(spec.level_shape(level)) for level, c in enumerate(spec.level_channels()))


def decode_work(spec: GridSpec) -> int:
    """Multiply-adds of decoding a block: each latent's ARM (plus LATENT_WORK), then at each pixel
    the synthesis MLP, the basis product and the channels' interpolation (CHANNEL_WORK each)."""
    per_latent = sum(o * i for o, i in spec.arm_shapes()) + LATENT_WORK
    per_pixel = (sum(o * i for o, i in spec.synthesis_shapes())
                 + spec.components * (spec.bands + 9 * spec.filtered + 2 * spec.pulled)
                 + CHANNEL_WORK * (spec.components + sum(spec.channels)))
    return latent_count(spec) * per_latent + spec.height * spec.width * per_pixel


def _check_sizes(spec: GridSpec) -> None:
    """Refuse a model larger than its block allows, before anything is decoded: at most ``bands``
    basis vectors, MAX_PIXELS pixels, at most ``MAX_BLOCK_VALUES`` parameters, latents and
    synthesis features, and at most ``MAX_WORK_PER_VALUE`` multiply-adds per value."""
    if spec.components > spec.bands:
        raise GridStreamError(f"{spec.components} basis vectors for {spec.bands} bands")
    if spec.height * spec.width > MAX_PIXELS:
        raise GridStreamError(f"a grid block of {spec.height} x {spec.width} pixels, more than the decoder's "
                              f"limit of {MAX_PIXELS}")
    counts = {
        "parameters": sum(math.prod(shape) for _, shape in param_arrays(spec)),
        "latents": latent_count(spec),
        "synthesis features": spec.height * spec.width * (spec.components + sum(spec.channels)),
    }
    for what, count in counts.items():
        if count > stream.MAX_BLOCK_VALUES:
            raise GridStreamError(f"the grid model declares {count} {what}, more than the decoder's limit "
                                  f"of {stream.MAX_BLOCK_VALUES}")
    work, limit = decode_work(spec), stream.MAX_WORK_PER_VALUE * spec.bands * spec.height * spec.width
    if work > limit:
        raise GridStreamError(f"the grid model declares {work} multiply-adds of decoding, more than the "
                              f"decoder's limit of {limit} ({stream.MAX_WORK_PER_VALUE} per value)")


def unpack(payload: bytes, bands: int, height: int, width: int, version: int = stream.VERSION):
    """(spec, step, mean, basis, filter taps or None, synthesis layers, latents) from a payload (after
    its affine) of format ``version``; the coefficient images pulled where ``spec.pulled``."""
    reader = _cursor(payload)
    spec, step = _read_head(reader, bands, height, width, version)
    arrays = param_arrays(spec)
    heads = [reader.unpack(_ARRAY) for _ in arrays]
    params = {}
    try:
        decoder = entropy.new_decoder(reader.take(reader.unpack(_STREAM)[0]))
        scales = np.concatenate([np.full(math.prod(shape), j, np.int64) for (_, shape), (_, j) in zip(arrays, heads)])
        ints = entropy.decode_residuals(decoder, lt.table_index(scales, 0))
        start = 0
        for (name, shape), (exponent, _) in zip(arrays, heads, strict=True):
            values = ints[start : start + math.prod(shape)]
            start += values.size
            if name == "mean" or name.startswith("basis"):
                values = np.cumsum(values)
            params[name] = (exponent, values.reshape(shape))
        latent_decoder = entropy.new_decoder(reader.take(reader.unpack(_STREAM)[0]))
    except (ValueError, RuntimeError, AssertionError) as exc:  # constriction asserts on invalid data
        raise GridStreamError(f"corrupt parameter stream: {exc}") from None
    if reader.pos != len(payload):
        raise GridStreamError(f"{len(payload) - reader.pos} unexpected bytes after the grid payload")
    try:
        latents, locations = lc.decode_latents(spec, *arm_from_params(params, spec), latent_decoder)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise GridStreamError(f"corrupt latent stream: {exc}") from None
    mean, basis, taps, pull, synthesis = dequantised(params, spec)
    if spec.pulled:
        latents = pulled_latents(spec, latents, locations, pull)
    return spec, step, mean, basis, taps, synthesis, latents


def describe(data: bytes, block_shape: tuple[int, int, int], version: int = stream.VERSION) -> dict:
    """:func:`model_parts` of a payload (after its affine)."""
    return model_parts(data[AFFINE.size :], *block_shape, version)


def model_parts(payload: bytes, bands: int, height: int, width: int, version: int = stream.VERSION) -> dict:
    """The model's ``spec`` and ``step``, and the bytes of the payload's parts: ``head_bytes``
    (architecture, step, array heads), ``parameter_bytes`` and ``latent_bytes`` (nothing decoded)."""
    reader = _cursor(payload)
    spec, step = _read_head(reader, bands, height, width, version)
    reader.take(_ARRAY.size * len(param_arrays(spec)))
    head = reader.pos
    parameters = _STREAM.size + reader.unpack(_STREAM)[0]
    return {"spec": spec, "step": step, "head_bytes": head, "parameter_bytes": parameters,
            "latent_bytes": len(payload) - head - parameters}


def decode(data: bytes, block_shape: tuple[int, int, int], ys, xs, version: int = stream.VERSION) -> np.ndarray:
    """Values (bands, len(ys), len(xs)) at pixel positions ``ys`` x ``xs``, from a payload of format ``version``."""
    offset, scale = ByteCursor(data, 0, GridStreamError, "grid payload ends early").unpack(AFFINE)
    spec, step, mean, basis, taps, synthesis, latents = unpack(data[AFFINE.size :], *block_shape, version)
    return synthesise(spec, latents, step, synthesis, basis, mean, np.asarray(ys, float), np.asarray(xs, float),
                      (scale, offset), taps)

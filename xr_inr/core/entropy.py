"""The entropy coder: integers under the fixed Laplace tables, with constriction's range coder.

An integer residual ``r`` (a value minus its predicted centre) is coded under
the table picked by a scale index ``j`` and an offset index ``a``
(:mod:`xr_inr.core.laplace_tables`, part of the format); the functions here take
the table's index, :func:`~xr_inr.core.laplace_tables.table_index` of (j, a). Large scales split
``r`` into a table symbol and ``k`` raw low bits; the tables' two end symbols
are escapes for larger magnitudes.

Within a batch (one decode step of the caller) every index is known before
any symbol is decoded, so a batch is coded grouped by table: a stable sort by
table index, one constriction call per table used, then the low bits of every
split symbol (uniform, one call), then the escapes: for each end symbol, the
excess x = |q| - HALF_ALPHABET as n = bit_length(x + 1) - 1 (uniform over 32),
then the n bits of x + 1 - 2**n (uniform: the low 16 bits, then the rest).

Why decoding is exact on every machine: the tables are integer frequencies
shipped with the package, handed to constriction as exactly representable
float64 probabilities ``freq / 2**24`` (the float type is part of the format:
constriction quantises in the input's type); constriction's quantisation of
them is sequential IEEE-754 arithmetic in Rust (no transcendental functions,
no reordering), and its range coder works on integers. Streams are the
coder's 32-bit words, little-endian.

Decoding runs constriction's range decoder, or where the ``_range`` extension is built its
algorithm compiled (:class:`CompiledDecoder`: a phase's symbols in one call instead of one call
per table; the same integers, tested against constriction on its own streams and on every CDF
boundary of every table). Encoding is always constriction's.

Only numpy and constriction (and the optional extension).
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from . import laplace_tables as lt

try:
    from . import _range as _compiled
except ImportError:  # built without a C compiler: constriction decodes, the same integers
    _compiled = None

_ESCAPE_LENGTHS = 32
_M = lt.HALF_ALPHABET


@functools.lru_cache(maxsize=None)
def _tables() -> np.ndarray:
    return lt.load()


@functools.lru_cache(maxsize=None)
def _cdfs() -> np.ndarray:
    """(tables, alphabet + 1) uint32: the CDF constriction builds from each table's probabilities
    ``freq / 2**PRECISION`` (``Categorical(perfect=False)``, its fast quantisation: symbol i's left end
    is floor(cumulative probability x (2**PRECISION - alphabet)) + i, exact here as the probabilities
    sum to 1), then 2**PRECISION."""
    frequencies = _tables().astype(np.int64)
    alphabet = frequencies.shape[1]
    before = np.cumsum(frequencies, axis=1) - frequencies
    left = ((before * ((1 << lt.PRECISION) - alphabet)) >> lt.PRECISION) + np.arange(alphabet)
    ends = np.full((left.shape[0], 1), 1 << lt.PRECISION)
    return np.ascontiguousarray(np.concatenate([left, ends], axis=1), np.uint32)


@functools.lru_cache(maxsize=None)
def _table_bits() -> np.ndarray:
    return lt.PRECISION - np.log2(_tables().astype(np.float64))


_MODELS: list = [None] * lt.TABLES
"""constriction model of each table, built when first used (:func:`_model`; a list: the
decoder looks up thousands per block)."""


def _model(table: int):
    """constriction model of one table (exact dyadic probabilities freq / 2**PRECISION)."""
    model = _MODELS[table]
    if model is None:
        probabilities = _tables()[table].astype(np.float64) * 2.0**-lt.PRECISION
        model = _MODELS[table] = constriction.stream.model.Categorical(probabilities, perfect=False)
    return model


_UNIFORM = constriction.stream.model.Uniform()
_LENGTHS = constriction.stream.model.Uniform(_ESCAPE_LENGTHS)


def grouping(table: np.ndarray, order: np.ndarray | None = None, counts: np.ndarray | None = None):
    """(stable order by table, tables used, their starts and counts in that order) of the table
    indices ``table``; ``order`` and ``counts`` (symbols per table, all tables) where the caller has
    them already (the compiled ARM's counting sort)."""
    if order is None:
        order = np.argsort(table.astype(np.int16), kind="stable")  # radix sort
        counts = np.bincount(table, minlength=lt.TABLES)
    tables = np.flatnonzero(counts)
    return order, tables, (np.cumsum(counts) - counts)[tables], counts[tables]


def encode_residuals(encoder, r: np.ndarray, table: np.ndarray, grouped=None) -> None:
    """Code integer residuals ``r`` (one batch) under the tables ``table``; ``grouped``:
    :func:`grouping` of ``table`` where the caller has it."""
    k = lt.TABLE_LOW_BITS[table]
    q = (r + ((1 << k) >> 1)) >> k
    low = r + ((1 << k) >> 1) - (q << k)
    order, tables, starts, counts = grouping(table) if grouped is None else grouped
    q, k, low = q[order], k[order], low[order]
    symbols = (np.clip(q, -_M, _M) + _M).astype(np.int32)
    for table, start, count in zip(tables, starts, counts):
        encoder.encode(symbols[start : start + count], _model(int(table)))
    split = k > 0
    if split.any():
        encoder.encode(low[split].astype(np.int32), _UNIFORM, (1 << k[split]).astype(np.int32))
    excess = np.abs(q[np.abs(q) >= _M]) - _M + 1
    if excess.size:
        if excess.max() >= 2**31:
            raise ValueError("a value is too large for the stream format")
        n = np.frexp(excess.astype(np.float64))[1] - 1
        encoder.encode(n.astype(np.int32), _LENGTHS)
        rest = excess - (1 << n)
        for bits, part in ((np.minimum(n, 16), rest & 0xFFFF), (np.maximum(n - 16, 0), rest >> 16)):
            if (bits > 0).any():
                encoder.encode(part[bits > 0].astype(np.int32), _UNIFORM, (1 << bits[bits > 0]).astype(np.int32))


def decode_residuals(decoder, table: np.ndarray, grouped=None) -> np.ndarray:
    """The residuals :func:`encode_residuals` coded under the same tables (int64); ``grouped``:
    :func:`grouping` of ``table`` where the caller has it."""
    order, tables, _, counts = grouping(table) if grouped is None else grouped
    r = np.empty(table.size, np.int64)
    r[order] = decode_grouped(decoder, tables, counts)
    return r


def decode_grouped(decoder, tables: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`decode_residuals` in the grouped order (int64): ``counts`` residuals under each of
    ``tables`` (a :func:`grouping`'s), one after the other."""
    if not tables.size:
        return np.zeros(0, np.int64)
    if isinstance(decoder, CompiledDecoder):
        return decoder.decode_grouped(tables, counts)
    q = np.concatenate([decoder.decode(_MODELS[t] or _model(t), count)  # (a list lookup first: thousands per block)
                        for t, count in zip(tables.tolist(), counts.tolist())], dtype=np.int64)
    q -= _M
    split = tables >= lt.FIRST_SPLIT_TABLE  # grouped by table, the split symbols come last
    if split[-1]:  # their low bits (every split table has some); none in most batches
        first = int(counts[~split].sum())
        k = np.repeat(lt.TABLE_LOW_BITS[tables[split]], counts[split])
        low = decoder.decode(_UNIFORM, (1 << k).astype(np.int32))
    if q.min() == -_M or q.max() == _M:  # escapes
        ends = np.flatnonzero(np.abs(q) == _M)
        n = decoder.decode(_LENGTHS, ends.size).astype(np.int64)
        excess = 1 << n
        for bits, shift in ((np.minimum(n, 16), 0), (np.maximum(n - 16, 0), 16)):
            if (bits > 0).any():
                part = decoder.decode(_UNIFORM, (1 << bits[bits > 0]).astype(np.int32))
                excess[bits > 0] += part.astype(np.int64) << shift
        q[ends] = np.sign(q[ends]) * (_M - 1 + excess)
    if split[-1]:
        tail = q[first:]
        tail <<= k
        tail -= (1 << k) >> 1
        tail += low
    return q


def symbol_bits(r: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Code length in bits of each residual of :func:`encode_residuals` (the tables' ideal bits,
    escapes included)."""
    k = lt.TABLE_LOW_BITS[table]
    q = (r + ((1 << k) >> 1)) >> k
    bits = _table_bits()[table, np.clip(q, -_M, _M) + _M] + k
    escaped = np.abs(q) >= _M
    if escaped.any():
        bits[escaped] += np.log2(_ESCAPE_LENGTHS) + np.floor(np.log2(np.abs(q[escaped]) - _M + 1))
    return bits


def residual_bits(r: np.ndarray, table: np.ndarray) -> float:
    """Code length in bits of :func:`encode_residuals` (the sum of :func:`symbol_bits`)."""
    return float(symbol_bits(r, table).sum())


def new_encoder():
    return constriction.stream.queue.RangeEncoder()


def stream_bytes(encoder) -> bytes:
    """The encoder's compressed words as little-endian bytes."""
    return encoder.get_compressed().astype("<u4").tobytes()


class CompiledDecoder:
    """constriction's queue range decoder (32-bit words, 64-bit state) run by the ``_range`` extension:
    the stream's words and the state (lower, range, point, next word)."""

    def __init__(self, words: np.ndarray):
        self.words = words
        high, low = (words[:2].tolist() + [0, 0])[:2]  # constriction's first point: two words, zeros past the end
        self.state = np.array([0, 2**64 - 1, high << 32 | low, min(words.size, 2)], np.uint64)

    def decode_grouped(self, tables: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """:func:`decode_grouped` of this stream."""
        out = np.empty(int(counts.sum()), np.int64)
        _compiled.decode_grouped(self.words, self.state, np.ascontiguousarray(tables, np.intp),
                                 np.ascontiguousarray(counts, np.intp), _cdfs(), 2 * _M + 1, lt.TABLE_LOW_BITS,
                                 lt.FIRST_SPLIT_TABLE, out)
        return out


def new_decoder(data: bytes, compiled: bool = True):
    """A range decoder of ``data``: a :class:`CompiledDecoder` where the extension is built (and
    ``compiled``), else constriction's."""
    if len(data) % 4:
        raise ValueError("a range-coded stream is a whole number of 32-bit words")
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    if compiled and _compiled is not None:
        return CompiledDecoder(words)
    return constriction.stream.queue.RangeDecoder(words)

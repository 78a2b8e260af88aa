"""rANS entropy coder for integer symbols under discretised Laplace distributions.

Each symbol has its own location ``mu`` and scale ``b``; both pass through
:func:`quantise_params` and become an integer frequency table over the
alphabet ``lo..hi`` summing to ``2**PRECISION_BITS``. Symbols are queued in
batches (:meth:`RansEncoder.push`) and decoded batch by batch in the same
order (:meth:`RansDecoder.pop`), so an autoregressive decoder can compute the
parameters of a batch from the batches decoded before it.

The coder is byte-wise rANS (as in ryg_rans): a 32-bit state kept in
``[2**23, 2**31)``, renormalised one byte at a time. Stream layout:

* bytes 0-3: the encoder's final state, little-endian uint32;
* bytes 4-: the renormalisation bytes, in the order the decoder reads them.

An empty stream (no symbols) is the 4-byte initial state ``2**23``. Needs
only numpy.
"""

from bisect import bisect_right

import numpy as np

PRECISION_BITS = 16

_M = 1 << PRECISION_BITS
_L = 1 << 23  # lower bound of the state
_X_MAX_PER_FREQ = (_L >> PRECISION_BITS) << 8  # encoder renormalises while x >= this * freq
_CHUNK = 4096  # symbols per frequency-table computation (bounds memory)


def quantise_params(mu, scale):
    """Round mu to multiples of 1/64 and scale to a log2 grid of 1/16 steps in [2**-4, 2**12].

    Both encoder and decoder call this, so tiny float differences between
    machines rarely change the tables. Returns float64 arrays.
    """
    mu = np.asarray(mu, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(scale))):
        raise ValueError("mu and scale must be finite")
    with np.errstate(divide="ignore"):
        log_scale = np.log2(np.maximum(scale, 0.0))
    log_scale = np.clip(np.round(log_scale * 16.0) / 16.0, -4.0, 12.0)
    return np.round(mu * 64.0) / 64.0, np.exp2(log_scale)


def laplace_frequencies(mu, scale, lo, hi):
    """Frequency table ``(n, hi-lo+1)`` int64 of a discretised Laplace over ``lo..hi``.

    ``P(v)`` is proportional to ``F(v+0.5) - F(v-0.5)``, ``F`` the Laplace CDF
    with location mu and scale b (after :func:`quantise_params`); the tails
    beyond lo/hi are folded into the end symbols. Every row sums to exactly
    ``2**PRECISION_BITS`` and every entry is >= 1.
    """
    lo, hi = int(lo), int(hi)
    size = hi - lo + 1
    if not 1 <= size <= _M // 2:
        raise ValueError(f"alphabet size {size} outside [1, {_M // 2}]")
    mu, scale = quantise_params(mu, scale)
    mu, scale = np.broadcast_arrays(np.atleast_1d(mu), np.atleast_1d(scale))
    edges = np.arange(lo, hi, dtype=np.float64) + 0.5
    z = (edges[None, :] - mu[:, None]) / scale[:, None]
    half_tail = 0.5 * np.exp(-np.abs(z))
    cdf = np.where(z < 0, half_tail, 1.0 - half_tail)
    n = mu.shape[0]
    cdf = np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1)
    prob = np.diff(cdf, axis=1)
    freq = 1 + np.floor(prob * (_M - size)).astype(np.int64)
    # Floors leave a deficit in [0, size); give it to each row's most probable symbol.
    deficit = _M - freq.sum(axis=1)
    freq[np.arange(n), np.argmax(freq, axis=1)] += deficit
    return freq


def _check_batch(symbols, mu, scale):
    symbols = np.asarray(symbols)
    if symbols.ndim != 1:
        raise ValueError("symbols must be a 1-D array")
    if symbols.size and not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError("symbols must be integers")
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), symbols.shape)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), symbols.shape)
    return symbols.astype(np.int64), mu, scale


class RansEncoder:
    """Queue batches of symbols with :meth:`push`; :meth:`finish` returns the stream."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = int(lo), int(hi)
        self._batches = []

    def push(self, symbols, mu, scale):
        """Queue a batch (1-D int array, matching mu/scale). ValueError if a symbol is outside [lo, hi]."""
        symbols, mu, scale = _check_batch(symbols, mu, scale)
        if symbols.size and (symbols.min() < self.lo or symbols.max() > self.hi):
            raise ValueError(f"symbol outside [{self.lo}, {self.hi}]")
        self._batches.append((symbols, mu, scale))

    def finish(self) -> bytes:
        """Encode everything queued (in reverse, so the decoder reads forward) and return the bytes."""
        if self._batches:
            symbols, mu, scale = (np.concatenate(parts) for parts in zip(*self._batches))
        else:
            symbols = mu = scale = np.zeros(0)
        starts, freqs = [], []
        for i in range(0, symbols.size, _CHUNK):
            sl = slice(i, i + _CHUNK)
            table = laplace_frequencies(mu[sl], scale[sl], self.lo, self.hi)
            rows = np.arange(table.shape[0])
            index = symbols[sl] - self.lo
            freq = table[rows, index]
            freqs.extend(freq.tolist())
            starts.extend((np.cumsum(table, axis=1)[rows, index] - freq).tolist())
        x = _L
        out = []
        append = out.append
        for start, freq in zip(reversed(starts), reversed(freqs)):
            x_max = _X_MAX_PER_FREQ * freq
            while x >= x_max:
                append(x & 0xFF)
                x >>= 8
            q, r = divmod(x, freq)
            x = (q << PRECISION_BITS) + r + start
        out.reverse()
        return x.to_bytes(4, "little") + bytes(out)


class RansDecoder:
    """Decode a :class:`RansEncoder` stream batch by batch, in push order."""

    def __init__(self, data: bytes, lo: int, hi: int):
        if len(data) < 4:
            raise ValueError("rANS stream shorter than its 4-byte header")
        self.lo, self.hi = int(lo), int(hi)
        self._data = bytes(data)
        self._x = int.from_bytes(self._data[:4], "little")
        self._pos = 4

    def pop(self, mu, scale) -> np.ndarray:
        """Decode the next batch; mu/scale must match the encoder's push. Returns int64 symbols."""
        mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
        mu, scale = np.broadcast_arrays(mu, np.asarray(scale, dtype=np.float64))
        if mu.ndim != 1:
            raise ValueError("mu and scale must be 1-D")
        data, x, pos = self._data, self._x, self._pos
        mask = _M - 1
        decoded = []
        append = decoded.append
        try:
            for i in range(0, mu.size, _CHUNK):
                table = laplace_frequencies(mu[i : i + _CHUNK], scale[i : i + _CHUNK], self.lo, self.hi)
                cum = np.zeros((table.shape[0], table.shape[1] + 1), dtype=np.int64)
                np.cumsum(table, axis=1, out=cum[:, 1:])
                for row in cum.tolist():
                    slot = x & mask
                    s = bisect_right(row, slot) - 1
                    start = row[s]
                    x = (row[s + 1] - start) * (x >> PRECISION_BITS) + slot - start
                    while x < _L:
                        x = (x << 8) | data[pos]
                        pos += 1
                    append(s)
        except IndexError:
            raise ValueError("rANS stream exhausted: corrupt data or mismatched parameters") from None
        self._x, self._pos = x, pos
        return np.asarray(decoded, dtype=np.int64) + self.lo

    def done(self) -> bool:
        """True when every byte is consumed and the state is back to the encoder's initial state.

        An integrity check, not a guarantee: wrong parameters or corrupt data
        usually, but not always, leave it False.
        """
        return self._x == _L and self._pos == len(self._data)


def laplace_bits(symbols, mu, scale, lo, hi) -> float:
    """Ideal code length in bits of symbols under the quantised tables: sum of -log2(freq / 2**16)."""
    symbols, mu, scale = _check_batch(symbols, mu, scale)
    bits = 0.0
    for i in range(0, symbols.size, _CHUNK):
        table = laplace_frequencies(mu[i : i + _CHUNK], scale[i : i + _CHUNK], lo, hi)
        freq = table[np.arange(table.shape[0]), symbols[i : i + _CHUNK] - int(lo)]
        bits += float(np.sum(PRECISION_BITS - np.log2(freq)))
    return bits

"""The entropy coder under the fixed Laplace tables (xr_inr.core.entropy, xr_inr.core.laplace_tables)."""

import numpy as np
import pytest

from xr_inr.core import entropy
from xr_inr.core import laplace_tables as lt


def test_shipped_tables_are_the_generated_ones():
    """The tables are part of the format: the file in the package is what the generator computes."""
    shipped = lt.load()
    assert shipped.shape == (lt.TABLES, 2 * lt.HALF_ALPHABET + 1) and shipped.dtype == np.uint32
    assert (shipped.astype(np.int64).sum(axis=1) == 2**lt.PRECISION).all() and shipped.min() >= 1
    np.testing.assert_array_equal(shipped, lt.generate())


@pytest.mark.parametrize("spread", [0.1, 3.0, 300.0, 1e4])
def test_residuals_round_trip_with_split_bits_and_escapes(spread):
    rng = np.random.default_rng(1)
    j = rng.integers(lt.SCALE_MIN - 5, lt.SCALE_MAX + 5, 5000)
    a = rng.integers(-4, 5, 5000)
    r = np.round(rng.laplace(0, spread, 5000)).astype(np.int64)
    r[:4] = [2**20, -(2**30), lt.HALF_ALPHABET, 2**16 + 63]
    table = lt.table_index(j, a)
    encoder = entropy.new_encoder()
    entropy.encode_residuals(encoder, r, table)
    data = entropy.stream_bytes(encoder)
    assert np.array_equal(entropy.decode_residuals(entropy.new_decoder(data), table), r)
    assert abs(8 * len(data) - entropy.residual_bits(r, table)) <= 0.01 * 8 * len(data) + 64
    k = lt.TABLE_LOW_BITS[table]  # each symbol's bits: its table's -log2 frequency, its low bits, its escape
    q = (r + ((1 << k) >> 1)) >> k
    inside = np.abs(q) < lt.HALF_ALPHABET
    frequency = lt.load()[table[inside], q[inside] + lt.HALF_ALPHABET]
    bits = entropy.symbol_bits(r, table)
    np.testing.assert_allclose(bits[inside], lt.PRECISION - np.log2(frequency) + k[inside])
    assert (bits[~inside] > lt.PRECISION - np.log2(lt.load()[table[~inside]].max(axis=1)) + 5).all()


def test_a_batch_decodes_in_the_order_it_was_coded_whatever_the_tables():
    """Symbols are coded grouped by table; the decoder puts them back in the caller's order."""
    rng = np.random.default_rng(2)
    batches = [(rng.integers(-3, 4, n), rng.integers(lt.SCALE_MIN, lt.SCALE_MAX, n), rng.integers(-4, 5, n))
               for n in (1, 17, 400)]
    encoder = entropy.new_encoder()
    for r, j, a in batches:
        entropy.encode_residuals(encoder, r, lt.table_index(j, a))
    decoder = entropy.new_decoder(entropy.stream_bytes(encoder))
    for r, j, a in batches:
        np.testing.assert_array_equal(entropy.decode_residuals(decoder, lt.table_index(j, a)), r)


def test_a_stream_of_odd_length_is_refused():
    with pytest.raises(ValueError, match="32-bit words"):
        entropy.new_decoder(b"abc")

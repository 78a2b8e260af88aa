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


DECODERS = [pytest.param(False, id="constriction"),
            pytest.param(True, id="compiled", marks=pytest.mark.skipif(entropy._compiled is None,
                                                                     reason="the _range extension is not built"))]
needs_compiled = pytest.mark.skipif(entropy._compiled is None, reason="the _range extension is not built")


@pytest.mark.parametrize("compiled", DECODERS)
@pytest.mark.parametrize("spread", [0.1, 3.0, 300.0, 1e4])
def test_residuals_round_trip_with_split_bits_and_escapes(spread, compiled):
    rng = np.random.default_rng(1)
    j = rng.integers(lt.SCALE_MIN - 5, lt.SCALE_MAX + 5, 5000)
    a = rng.integers(-4, 5, 5000)
    r = np.round(rng.laplace(0, spread, 5000)).astype(np.int64)
    r[:4] = [2**20, -(2**30), lt.HALF_ALPHABET, 2**16 + 63]
    table = lt.table_index(j, a)
    encoder = entropy.new_encoder()
    entropy.encode_residuals(encoder, r, table)
    data = entropy.stream_bytes(encoder)
    assert np.array_equal(entropy.decode_residuals(entropy.new_decoder(data, compiled), table), r)
    assert abs(8 * len(data) - entropy.residual_bits(r, table)) <= 0.01 * 8 * len(data) + 64
    k = lt.TABLE_LOW_BITS[table]  # each symbol's bits: its table's -log2 frequency, its low bits, its escape
    q = (r + ((1 << k) >> 1)) >> k
    inside = np.abs(q) < lt.HALF_ALPHABET
    frequency = lt.load()[table[inside], q[inside] + lt.HALF_ALPHABET]
    bits = entropy.symbol_bits(r, table)
    np.testing.assert_allclose(bits[inside], lt.PRECISION - np.log2(frequency) + k[inside])
    assert (bits[~inside] > lt.PRECISION - np.log2(lt.load()[table[~inside]].max(axis=1)) + 5).all()


@pytest.mark.parametrize("compiled", DECODERS)
def test_a_batch_decodes_in_the_order_it_was_coded_whatever_the_tables(compiled):
    """Symbols are coded grouped by table; the decoder puts them back in the caller's order."""
    rng = np.random.default_rng(2)
    batches = [(rng.integers(-3, 4, n), rng.integers(lt.SCALE_MIN, lt.SCALE_MAX, n), rng.integers(-4, 5, n))
               for n in (1, 17, 400)]
    encoder = entropy.new_encoder()
    for r, j, a in batches:
        entropy.encode_residuals(encoder, r, lt.table_index(j, a))
    decoder = entropy.new_decoder(entropy.stream_bytes(encoder), compiled)
    for r, j, a in batches:
        np.testing.assert_array_equal(entropy.decode_residuals(decoder, lt.table_index(j, a)), r)


def test_a_stream_of_odd_length_is_refused():
    with pytest.raises(ValueError, match="32-bit words"):
        entropy.new_decoder(b"abc")


@needs_compiled
def test_the_compiled_decoder_uses_constrictions_cdf_at_every_boundary_of_every_table():
    """The first symbol of a two-word stream is decided by its quantile point // (2**40 - 1): streams
    that put it on each side of every left end of every table's CDF decode to the same symbols as
    with constriction's model of that table."""
    cdfs = entropy._cdfs()
    alphabet = 2 * lt.HALF_ALPHABET + 1
    assert cdfs.shape == (lt.TABLES, alphabet + 1) and (np.diff(cdfs.astype(np.int64), axis=1) >= 1).all()
    scale = 2**40 - 1  # (2**64 - 1) >> 24, the first symbol's scale
    for table in range(lt.TABLES):
        quantiles = np.concatenate([cdfs[table, 1:alphabet], cdfs[table, 1:alphabet] - 1, [0, 2**24 - 1]])
        points = quantiles.astype(np.uint64) * np.uint64(scale)
        words = np.stack([points >> np.uint64(32), points & np.uint64(0xFFFFFFFF)], 1).astype(np.uint32)
        expected = [int(entropy.constriction.stream.queue.RangeDecoder(w).decode(entropy._model(table), 1)[0])
                    for w in words]
        got = [entropy.CompiledDecoder(w).decode_grouped(np.array([table]), np.array([1]))[0] for w in words]
        k = int(lt.TABLE_LOW_BITS[table])  # the table's symbol from the residual: its low bits off, escapes clipped
        got = [int(np.clip((r + ((1 << k) >> 1)) >> k, -lt.HALF_ALPHABET, lt.HALF_ALPHABET)) + lt.HALF_ALPHABET
               for r in got]
        assert got == expected, table
        assert expected[: alphabet - 1] == list(range(1, alphabet))  # cdf[s] starts symbol s


@needs_compiled
@pytest.mark.parametrize("symbols", [0, 1, 3, 40])
def test_the_compiled_decoder_reads_short_streams_and_past_their_end_as_constriction_does(symbols):
    rng = np.random.default_rng(symbols)
    table = lt.table_index(rng.integers(lt.SCALE_MIN, lt.SCALE_MAX, 200), rng.integers(-4, 5, 200))
    encoder = entropy.new_encoder()
    entropy.encode_residuals(encoder, np.round(rng.laplace(0, 3, symbols)).astype(np.int64), table[:symbols])
    data = entropy.stream_bytes(encoder)
    assert len(data) <= 8 or symbols == 40
    for batch in (table[:symbols], table[symbols:]):  # what was coded, then 200 - symbols more than that
        if batch.size:
            np.testing.assert_array_equal(entropy.decode_residuals(entropy.new_decoder(data, True), batch),
                                          entropy.decode_residuals(entropy.new_decoder(data, False), batch))


@needs_compiled
def test_the_compiled_decoder_refuses_data_no_model_coded_and_keeps_its_state():
    words = np.array([0xFFFFFFFF, 0xFFFFFFFF, 7], np.uint32)  # the first quantile is 2**24 and more
    decoder = entropy.CompiledDecoder(words)
    state = decoder.state.copy()
    with pytest.raises(ValueError, match="invalid"):
        decoder.decode_grouped(np.array([0]), np.array([1]))
    np.testing.assert_array_equal(decoder.state, state)
    with pytest.raises(AssertionError, match="invalid"):  # what constriction raises
        entropy.constriction.stream.queue.RangeDecoder(words).decode(entropy._model(0), 1)
    with pytest.raises(ValueError, match="inconsistent"):
        decoder.decode_grouped(np.array([lt.TABLES]), np.array([1]))  # no such table

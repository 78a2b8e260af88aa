import numpy as np
import pytest

from xr_inr.core.entropy import (
    PRECISION_BITS,
    RansDecoder,
    RansEncoder,
    laplace_bits,
    laplace_frequencies,
    quantise_params,
)

LO, HI = -64, 64


def _random_batches(rng, sizes, scale_range=(0.1, 50.0)):
    batches = []
    for n in sizes:
        mu = rng.normal(0.0, 8.0, n)
        scale = np.exp(rng.uniform(*np.log(scale_range), n))
        symbols = np.clip(np.round(rng.laplace(mu, scale)), LO, HI).astype(np.int64)
        batches.append((symbols, mu, scale))
    return batches


def _encode(batches, lo=LO, hi=HI):
    enc = RansEncoder(lo, hi)
    for symbols, mu, scale in batches:
        enc.push(symbols, mu, scale)
    return enc.finish()


def _decode(data, batches, lo=LO, hi=HI):
    dec = RansDecoder(data, lo, hi)
    out = [dec.pop(mu, scale) for _, mu, scale in batches]
    return out, dec


def test_round_trip_batches_of_different_sizes():
    rng = np.random.default_rng(0)
    batches = _random_batches(rng, [1, 7, 300, 1000, 64, 5000])
    data = _encode(batches)
    decoded, dec = _decode(data, batches)
    for (symbols, _, _), got in zip(batches, decoded):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, symbols)
    assert dec.done()


def test_alphabet_ends_and_extreme_scales():
    n = 400
    rng = np.random.default_rng(1)
    symbols = rng.choice([LO, HI, LO + 1, HI - 1, 0], n)
    mu = rng.choice([0.0, LO - 500.0, HI + 500.0, 3.3], n)
    scale = rng.choice([1e-9, 2.0**-4, 0.3, 2.0**12, 1e9], n)
    batches = [(symbols[:150], mu[:150], scale[:150]), (symbols[150:], mu[150:], scale[150:])]
    data = _encode(batches)
    decoded, dec = _decode(data, batches)
    np.testing.assert_array_equal(np.concatenate(decoded), symbols)
    assert dec.done()


def test_single_symbol_alphabet():
    batches = [(np.full(50, 3), np.zeros(50), np.ones(50))]
    data = _encode(batches, lo=3, hi=3)
    decoded, dec = _decode(data, batches, lo=3, hi=3)
    np.testing.assert_array_equal(decoded[0], 3)
    assert dec.done()
    assert len(data) == 4


@pytest.mark.parametrize("scale_range", [(0.05, 0.5), (0.3, 30.0), (20.0, 200.0)])
def test_size_close_to_ideal(scale_range):
    rng = np.random.default_rng(2)
    batches = _random_batches(rng, [500] * 40, scale_range)
    data = _encode(batches)
    symbols, mu, scale = (np.concatenate(parts) for parts in zip(*batches))
    ideal_bytes = laplace_bits(symbols, mu, scale, LO, HI) / 8
    assert ideal_bytes > 100
    assert len(data) <= ideal_bytes * 1.01 + 16
    assert len(data) >= ideal_bytes - 1


def test_laplace_bits_matches_table():
    symbols, mu, scale = np.array([0, 5, -64]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 2.0, 3.0])
    table = laplace_frequencies(mu, scale, LO, HI)
    expected = -np.log2(table[np.arange(3), symbols - LO] / 2**PRECISION_BITS).sum()
    assert laplace_bits(symbols, mu, scale, LO, HI) == pytest.approx(expected)


def test_frequency_rows_sum_and_floor():
    rng = np.random.default_rng(3)
    mu = np.concatenate([rng.normal(0, 40, 500), [LO - 1e4, HI + 1e4, 0.0, 0.5]])
    scale = np.concatenate([np.exp(rng.uniform(-8, 12, 500)), [1.0, 1.0, 1e-6, 1e6]])
    table = laplace_frequencies(mu, scale, LO, HI)
    assert table.dtype == np.int64
    assert table.shape == (504, HI - LO + 1)
    assert np.all(table.sum(axis=1) == 2**PRECISION_BITS)
    assert table.min() >= 1
    # Mass follows the location: a tiny scale concentrates on round(mu), far mu on the end symbol.
    assert table[502].argmax() == -LO and table[502].max() > 2**PRECISION_BITS - 200
    assert table[500].argmax() == 0 and table[501].argmax() == HI - LO
    # A symmetric distribution centred on a half-integer gives equal mass to its two neighbours.
    assert table[503, -LO] == pytest.approx(table[503, -LO + 1], abs=1)


def test_quantise_params_grid():
    mu, scale = quantise_params([0.007, 1.0 / 64 * 3 + 1e-9], [3.0, 1e-9])
    np.testing.assert_array_equal(mu, [0.0, 3 / 64])
    assert np.log2(scale[0]) * 16 == pytest.approx(round(np.log2(3.0) * 16))
    assert scale[1] == 2.0**-4
    assert quantise_params(0.0, 1e9)[1] == 2.0**12
    with pytest.raises(ValueError):
        quantise_params(np.nan, 1.0)


@pytest.mark.parametrize("bad", [LO - 1, HI + 1])
def test_out_of_range_symbol_raises(bad):
    enc = RansEncoder(LO, HI)
    with pytest.raises(ValueError):
        enc.push(np.array([0, bad, 1]), np.zeros(3), np.ones(3))


def test_wrong_parameters_are_detected():
    # A check, not a guarantee: mismatched parameters usually leave done() False or run the stream dry.
    rng = np.random.default_rng(4)
    batches = _random_batches(rng, [200, 200], (0.5, 5.0))
    data = _encode(batches)
    wrong = [(s, mu + 3.0, scale * 2.0) for s, mu, scale in batches]
    try:
        decoded, dec = _decode(data, wrong)
    except ValueError:
        return
    assert not dec.done()
    assert not all(np.array_equal(got, s) for got, (s, _, _) in zip(decoded, batches))


def test_empty_stream_round_trips():
    data = RansEncoder(LO, HI).finish()
    assert len(data) == 4
    dec = RansDecoder(data, LO, HI)
    assert dec.pop(np.zeros(0), np.zeros(0)).size == 0
    assert dec.done()
    data = _encode([(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))])
    assert len(data) == 4 and RansDecoder(data, LO, HI).done()


def test_truncated_stream_raises():
    rng = np.random.default_rng(5)
    batches = _random_batches(rng, [300])
    data = _encode(batches)
    with pytest.raises(ValueError):
        _decode(data[: len(data) // 2], batches)

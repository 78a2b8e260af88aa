"""The coefficient latents rounded again for rate and distortion (xr_inr.methods.grid.rounding)."""

import numpy as np
import pytest

from xr_inr import INRCodec
from xr_inr.core import entropy
from xr_inr.methods.grid import arm as lc
from xr_inr.methods.grid import fitting, rounding
from xr_inr.methods.grid.model import (GridSpec, filter_images, pulled_latents, synthesis_inputs, synthesise,
                                      synthesised)
from xr_inr.methods.grid.payload import arm_from_params, dequantised, packed, quantised_parameters


@pytest.fixture(scope="module")
def trained(jasper_crop):
    """A 40 x 40 x 40 block at 0.2 bpppb, trained briefly: (fit, normalised target, payload budget in bits)."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget = 0.2 * target.size
    spec = fitting.block_spec(target, None, budget)
    spec = GridSpec(**{**spec.__dict__, "channels": (0, 1, 1), "hidden": 8})  # an MLP too
    assert spec.filtered and spec.pulled
    [fit] = fitting.GridTraining([target], [None], spec, [0.8 * budget]).train(60).results()
    return fit, target, budget


def test_the_filters_adjoint_is_its_transpose():
    """<filter(x) - x, y> = <x, adjoint(y) - y> for any x, y: the edges' repeated pixels included."""
    rng = np.random.default_rng(0)
    x, y, taps = rng.normal(size=(3, 5, 7)), rng.normal(size=(3, 5, 7)), rng.normal(size=(3, 9))
    assert np.sum(filter_images(x, taps) * y) == pytest.approx(np.sum(x * rounding._filter_adjoint(y, taps)), rel=1e-12)
    assert np.sum((filter_images(x, taps) - x) * y) != pytest.approx(np.sum(x * y[:, ::-1]), rel=1e-3)


def test_the_error_gradient_from_the_coefficients_is_that_of_the_decoded_values(trained):
    """Without a mask the gradient comes from the coefficients alone; with a mask of every element from the
    decoded values: the same numbers."""
    fit, target, _ = trained
    params, _ = quantised_parameters(fit, target, None)
    location = lc.latent_locations(fit.spec, lc.CodingModel(*arm_from_params(params, fit.spec)), fit.latents)
    unmasked = rounding._error_gradient(fit, params, target, None)(fit.latents, location)
    masked = rounding._error_gradient(fit, params, target, np.ones(target.shape, bool))(fit.latents, location)
    assert np.abs(unmasked).max() > 0
    np.testing.assert_allclose(unmasked, masked, rtol=1e-9, atol=1e-12 * np.abs(masked).max())


def test_a_moves_error_goes_through_the_synthesis_mlp(trained):
    """The Jacobian of the coefficients with respect to the MLP's coefficient inputs (the identity plus the MLP's)
    is that of central differences, and the squared sizes it gives are those of each column times the basis."""
    fit, target, _ = trained
    params, _ = quantised_parameters(fit, target, None)
    _, basis, taps, pull, _ = dequantised(params, fit.spec)
    location = lc.latent_locations(fit.spec, lc.CodingModel(*arm_from_params(params, fit.spec)), fit.latents)
    spec, k = fit.spec, fit.spec.components
    rng = np.random.default_rng(0)
    synthesis = [(rng.normal(size=shape) / np.sqrt(shape[1]), rng.normal(size=shape[0]))
                 for shape in spec.synthesis_shapes()]  # the briefly trained one rounds to zero
    jacobian = rounding._synthesis_jacobian(spec, fit.latents, location, fit.step, taps, pull, synthesis)
    ys, xs = np.arange(spec.height, dtype=float), np.arange(spec.width, dtype=float)
    features = synthesis_inputs(spec, pulled_latents(spec, fit.latents, location, pull), fit.step, ys, xs, taps)
    change, eps = rng.normal(size=(features.shape[0], k)), 1e-5
    plus, minus = features.copy(), features.copy()
    plus[:, :k] += eps * change
    minus[:, :k] -= eps * change
    numeric = (synthesised(spec, plus, synthesis) - synthesised(spec, minus, synthesis)) / (2 * eps)
    np.testing.assert_allclose(np.einsum("por,pr->po", jacobian, change), numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(numeric - change).max() > 0.1  # the MLP's share is not negligible here
    gram = basis @ basis.T
    sizes = rounding._squared_sizes(jacobian, gram, rows=7)
    np.testing.assert_allclose(sizes[5], [np.sum((jacobian[5, :, r] @ basis) ** 2) for r in range(k)], rtol=1e-10)
    np.testing.assert_allclose(sizes, np.einsum("por,os,psr->pr", jacobian, gram, jacobian), rtol=1e-10)


def test_a_pass_lowers_the_squared_error_plus_lambda_times_the_bits(trained):
    """One pass at lambda moves coefficient latents by one where their error plus lambda times their bits falls:
    the exact cost (decoded squared error plus lambda times the coder's bits, the other parameters held) falls;
    at a tenth of the start lambda the squared error falls, at ten times it the bits."""
    fit, target, _ = trained
    params, _ = quantised_parameters(fit, target, None)
    arm, e = arm_from_params(params, fit.spec)
    mean, basis, taps, pull, synthesis = dequantised(params, fit.spec)
    ys, xs = np.arange(fit.spec.height, dtype=float), np.arange(fit.spec.width, dtype=float)
    k = fit.spec.components

    def cost(latents, lam):  # (squared error + lam bits, squared error, bits), as decoded and coded
        location = lc.latent_locations(fit.spec, lc.CodingModel(arm, e), latents)
        values = synthesise(fit.spec, pulled_latents(fit.spec, latents, location, pull), fit.step, synthesis, basis,
                            mean, ys, xs, taps=taps)
        sse, bits = float(np.sum((values - target) ** 2)), lc.latent_bits(fit.spec, lc.CodingModel(arm, e), latents)
        return sse + lam * bits, sse, bits

    lam = rounding.start_lambda(fit, params, target, None)
    assert lam > 0
    for scale in (1.0, 0.1, 10.0):
        moved = rounding.moved_latents(fit, params, target, None, scale * lam)
        changed = moved[0][:k] != fit.latents[0][:k]
        assert changed.any() and np.abs(moved[0][:k] - fit.latents[0][:k]).max() == 1
        assert all(np.array_equal(a, b) for a, b in zip(moved[1:], fit.latents[1:]))
        assert np.array_equal(moved[0][k:], fit.latents[0][k:])
        before, after = cost(fit.latents, scale * lam), cost(moved, scale * lam)
        assert after[0] < before[0]
        if scale == 0.1:
            assert after[1] < before[1]  # a low lambda buys error with bits
        if scale == 10.0:
            assert after[2] < before[2]  # a high one bits with error


def test_rounding_again_keeps_the_best_stream_within_budget(trained):
    """rounded_again returns a stream within its budget that decodes to the MSE it reports, better than the
    stream of the latents as trained, and None when no stream fits."""
    fit, target, budget = trained
    start = packed(fit, target, None)
    size = 8 * len(start.payload)
    again = rounding.rounded_again(start, target, None, size, 0.995 * size, 4)
    assert again is not None
    assert 8 * len(again.payload) <= size and again.mse < start.mse
    over, decoded_mse = fitting.stream_error(again.payload, target, None, size)
    assert not over and decoded_mse == pytest.approx(again.mse, rel=1e-9)
    assert packed(again.fit, target, None)[:2] == again[:2]  # the MSE and payload it reports
    assert rounding.rounded_again(start, target, None, 64.0, 60.0, 2) is None


def test_passes_go_on_while_the_last_stream_is_over_budget(trained, monkeypatch):
    """Aimed over its budget, every pass lands over it: up to LANDING passes follow the effort's, lambda
    growing by LANDING_STEP more each time; aimed under it, the effort's passes only."""
    fit, target, _ = trained
    start = packed(fit, target, None)
    size = 8 * len(start.payload)
    lambdas = []
    moved = rounding.moved_latents

    def recording(fit, params, target, valid, lam):
        lambdas.append(lam)
        return moved(fit, params, target, valid, lam)

    monkeypatch.setattr(rounding, "moved_latents", recording)
    monkeypatch.setattr(rounding, "ELASTICITY", 0.0)  # lambda left alone by the controller
    rounding.rounded_again(start, target, None, 0.5 * size, size, 2)
    assert lambdas == pytest.approx([lambdas[0]] * 3 + [lambdas[0] * 1.5, lambdas[0] * 1.5 * 1.5**2])
    assert rounding.LANDING == 3
    lambdas.clear()
    rounding.rounded_again(start, target, None, 2 * size, size, 2)
    assert len(lambdas) == 2


@pytest.mark.parametrize("effort", ["fast", "default", "best"])
def test_every_effort_rounds_again(jasper_crop, effort, monkeypatch):
    """The packer rounds every block's stream again with its effort's passes; the fast effort only blocks of
    at most FAST_ROUNDING_LATENTS coefficient latents."""
    passes = []

    def recording(start, target, valid, budget_bits, aim_bits, count):
        passes.append(count)
        return rounding.rounded_again(start, target, valid, budget_bits, aim_bits, count)

    monkeypatch.setattr(fitting, "rounded_again", recording)
    monkeypatch.setattr(fitting, "SEARCH_STEPS", 5)
    block = jasper_crop[:8, :16, :16].astype(np.float32)
    INRCodec(bpppb=0.5, effort=effort, steps=20).encode(block)
    expected = fitting.ROUNDING_PASSES[effort]
    assert expected == {"fast": 2, "default": 6, "best": 8}[effort]
    assert passes and set(passes) == {expected}
    passes.clear()
    monkeypatch.setattr(fitting, "FAST_ROUNDING_LATENTS", 16 * 16 - 1)  # under one coefficient image's
    INRCodec(bpppb=0.5, effort=effort, steps=20).encode(block)
    assert not passes if effort == "fast" else passes and set(passes) == {expected}


def test_the_bits_a_move_changes_include_a_share_of_its_neighbours(trained):
    """Moving a sub-lattice's latents all by one changes the coefficient images' bits by what their bits
    changes add up to (their own, and shares of their neighbours'), where their own bits alone miss most of it."""
    fit, target, _ = trained
    params, _ = quantised_parameters(fit, target, None)
    arm, e = arm_from_params(params, fit.spec)
    latents = [np.array(z, np.int64) for z in fit.latents]
    k = fit.spec.components
    at = (slice(None), slice(0, None, rounding.LATTICE), slice(0, None, rounding.LATTICE))  # read by later phases
    centre, table = lc.coefficient_coding(fit.spec, lc.CodingModel(arm, e), latents)

    def total():
        centre, table = lc.coefficient_coding(fit.spec, lc.CodingModel(arm, e), latents)
        return float(entropy.symbol_bits(latents[0][:k] - centre, table).sum())

    before = total()
    changes = rounding._bits_changes(fit.spec, lc.CodingModel(arm, e), latents, at, centre, table)
    assert np.array_equal(latents[0], fit.latents[0])  # left as they were
    for move, change in zip((-1, 1), changes):
        latents[0][:k][at] += move
        exact = total() - before
        latents[0][:k][at] -= move
        own = float((entropy.symbol_bits(latents[0][:k][at] + move - centre[at], table[at])
                     - entropy.symbol_bits(latents[0][:k][at] - centre[at], table[at])).sum())
        assert abs(change.sum() - exact) < 0.02 * abs(exact) < abs(own - exact)

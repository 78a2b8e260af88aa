"""The latent-grid method: numpy/torch twins, latent coding, the payload and the codec."""

import shutil

import numpy as np
import pytest
import torch

from xr_inr import BudgetWarning, INRCodec, StreamError, decode_block, inspect
from xr_inr.core import entropy
from xr_inr.core.stream import AFFINE
from xr_inr.methods.grid import arm as lc
from xr_inr.methods.grid import fitting
from xr_inr.methods.grid import model as grid_model
from xr_inr.methods.grid import payload
from xr_inr.methods.grid import solve
from xr_inr.methods.grid.fitting import GridModel
from xr_inr.methods.grid.model import GridSpec, filter_images, pull_images, synthesise, upsample_matrix
from xr_inr.methods.grid.payload import (FIXED_SHARE, SCALAR_LOSS, SPECTRAL_IMAGES, arm_from_params, choose_spec,
                                         components_worth_coding, decode, pack, quantised_parameters, unpack,
                                         water_filling_bits)
from xr_inr.metrics import psnr, sam_deg

SPEC = GridSpec(bands=7, height=9, width=11, components=3, channels=(1, 2, 1), hidden=6, arm_hidden=5, filtered=True,
                pulled=True)


def random_model(spec, seed=0):
    """A GridModel with random weights and integer latents, and its numpy twin's arrays (the filters' taps last)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mean, basis = rng.normal(size=spec.bands), rng.normal(size=(spec.components, spec.bands))
    coefficients = rng.normal(size=(spec.height * spec.width, spec.components))
    model = GridModel(spec, [0.05], mean[None], basis[None], coefficients[None], torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(torch.randn_like(p) * 8) / 8)
        for p in model.arm.parameters():  # a tame ARM: few symbols beyond the tables (escapes)
            p.copy_(torch.round(torch.randn_like(p) * 2) / 8)
        for z in model.latents:
            z.copy_(torch.round(torch.randn_like(z) * 3))

    def layers(module):
        return [(l.weight[0].detach().double().numpy(), l.bias[0].detach().double().numpy()) for l in module]

    latents = [z[0].detach().numpy().astype(np.int64) for z in model.latents]
    return model, latents, layers(model.synthesis), layers(model.arm), model.basis[0].detach().double().numpy(), \
        model.mean[0].detach().double().numpy(), model.taps[0].detach().double().numpy()


def test_a_filter_tap_adds_the_neighbour_at_its_offset_the_edges_repeated():
    """docs/format.md: taps row-major over (dy, dx) in -1, 0, 1; a correlation, the edge pixel read outside."""
    images = np.arange(12.0).reshape(1, 3, 4)
    right, up = np.zeros((1, 9)), np.zeros((1, 9))
    right[0, 5] = 0.5  # (dy, dx) = (0, +1)
    up[0, 1] = 2.0  # (-1, 0)
    shifted_left = np.concatenate([images[:, :, 1:], images[:, :, -1:]], axis=2)
    shifted_down = np.concatenate([images[:, :1], images[:, :-1]], axis=1)
    assert np.array_equal(filter_images(images, right), images + 0.5 * shifted_left)
    assert np.array_equal(filter_images(images, up), images + 2.0 * shifted_down)


def test_upsampling_is_exact_on_the_pixels_and_linear_between():
    assert np.array_equal(upsample_matrix(np.arange(5), 5, 1), np.eye(5))
    m = upsample_matrix(np.arange(8), 4, 2)
    assert np.allclose(m.sum(axis=1), 1) and (m >= 0).all()
    assert np.allclose(upsample_matrix([1.5], 5, 1), [[0, 0.5, 0.5, 0, 0]])


def integer_arm(arm, e=3):
    """The ARM's (weight, bias) as integers times 2**-e (the random model's are multiples of 1/8)."""
    return [(np.round(w * 2**e).astype(np.int64), np.round(b * 2**e).astype(np.int64)) for w, b in arm]


@pytest.mark.parametrize("shape", [(9, 11), (1, 7), (13, 13), (50, 100)])
def test_phases_visit_every_latent_once_after_its_context(shape):
    h, w = shape
    order = np.full(h * w + 1, -1)
    order[-1] = -2  # the zero slot
    for t, (points, contexts, _) in enumerate(lc.phases(h, w)):
        assert (order[points] == -1).all()
        assert (order[contexts] != -1).all() and (order[contexts] < t).all()
        order[points] = t
    assert (order[:-1] >= 0).all()


def test_arm_integers_are_exact():
    """The float64 BLAS route gives what int64 arithmetic gives, for any summation order."""
    rng = np.random.default_rng(0)
    e = 12
    arm = [(rng.integers(-2**14, 2**14, (o, i)), rng.integers(-2**14, 2**14, o)) for o, i in SPEC.arm_shapes()]
    context = rng.integers(-2**14, 2**14, (500, 12))
    stride = rng.integers(0, 8, 500)
    mu, log_scale = lc.arm_integers(lc.prepare_arm(arm, e), e, context.astype(np.float64), stride)
    (w0, b0), (w1, b1), (w2, b2), (w3, b3) = arm
    prediction = context @ w0[0] + b0[0]
    d = context * 2**e - prediction[:, None]
    v = np.abs(d) + 2**e
    k = np.array([[int(x).bit_length() - 1 for x in row] for row in v])
    f = np.sign(d) * ((k - e) * 2**lc.FRACTION + ((v - 2**k) << lc.FRACTION) // 2**k)
    h = np.concatenate([f, stride[:, None] * 2**lc.FRACTION], axis=1)
    for w, b in ((w1, b1), (w2, b2)):
        h = np.clip((h @ w.T + b * 2**lc.FRACTION) >> e, 0, int(lc.HIDDEN_CAP))
    out = h @ w3.T + b3 * 2**lc.FRACTION
    assert np.array_equal(mu, prediction * 2**lc.FRACTION + out[:, 0]) and np.array_equal(log_scale, out[:, 1])


@pytest.mark.parametrize("width, weights, e, latent", [(5, 2**14, 12, 2**14), (16, 2**14, 12, 2**14),
                                                       (16, 64, 3, 20), (8, 512, 7, 300), (12, 256, 5, 100)])
def test_the_compiled_arm_gives_the_numpy_integers(width, weights, e, latent):
    """The C phases (both builds: AVX2 + FMA where the CPU has it, and the baseline) give the numpy
    path's centres and tables bit for bit, and its order by table: extreme weights and latents
    (activations clipped), and tame ones (activations inside the clip, many of them whole numbers),
    through the kernels of 8 (widths 5 and 8), 12 and 16 hidden units."""
    if lc._compiled is None:
        assert shutil.which("cc") is None and shutil.which("gcc") is None, "a C compiler is here: build the extension"
        pytest.skip("built without a C compiler: decoding runs the numpy path")
    rng = np.random.default_rng(width + e)
    spec = GridSpec(bands=7, height=9, width=11, components=3, channels=(1,), hidden=6, arm_hidden=width)
    arm = lc.prepare_arm([(rng.integers(-weights, weights, (o, i)), rng.integers(-weights, weights, o))
                          for o, i in spec.arm_shapes()], e)
    model = lc.CodingModel(arm, e)
    assert model.widened is not None
    latents = rng.integers(-latent, latent, (3, 401)).astype(np.int16)
    latents[rng.random(latents.shape) < 0.7] = 0  # all-zero contexts too
    latents[:, -1] = 0  # the slot outside the grid
    context = rng.integers(0, 401, (300, 12))
    stride = rng.integers(0, lc.MAX_STRIDE, 300)
    centre, table = lc._numpy_phase_parameters(arm, e, latents, context, stride, model.zero)
    for baseline in (False, True):  # the AVX2 build where the CPU has it (numpy elsewhere), then the baseline build
        got_centre, got_table, grouped = model.phase_parameters(latents, context, stride, baseline)
        assert np.array_equal(got_centre, centre) and np.array_equal(got_table, table)
        assert (grouped is None) == (not baseline and not lc.FAST_COMPILED)
        if grouped is not None:
            assert all(np.array_equal(a, b) for a, b in zip(grouped, entropy.grouping(table), strict=True))
    one_stride = model.phase_parameters(latents, context, 7)  # one stride feature for every point
    assert np.array_equal(one_stride[1], lc._numpy_phase_parameters(arm, e, latents, context, 7, model.zero)[1])
    for outside in (-1, 401):
        context[150, 5] = outside
        with pytest.raises(ValueError, match="outside the grid"):
            model.phase_parameters(latents, context, 7, baseline=True)


def test_the_compiled_placing_gives_the_numpy_grids():
    """:func:`arm.place` (C where built) stores what the numpy twin stores, and refuses, storing
    nothing, a latent out of range and an index outside the phase."""
    rng = np.random.default_rng(5)
    points = rng.permutation(49)[:20]
    centre, order = rng.integers(-1000, 1000, 60), rng.permutation(60)
    residuals = rng.integers(-500, 500, 60)
    got, expected = np.zeros((3, 50), np.int16), np.zeros((3, 50), np.int16)
    lc.place(got, points, centre, order, residuals)
    lc._numpy_place(expected, points, centre, order, residuals)
    assert np.array_equal(got, expected) and np.count_nonzero(got[:, points]) > 50
    for place in (lc.place, lc._numpy_place):
        for edge in (lc.MAX_LATENT, -lc.MAX_LATENT):  # the first latents out of range
            residuals[7] = edge - centre[order[7]] - np.sign(edge)
            place(np.zeros((3, 50), np.int16), points, centre, order, residuals)
            residuals[7] += np.sign(edge)
            grid = np.zeros((3, 50), np.int16)
            with pytest.raises(ValueError, match="out of range"):
                place(grid, points, centre, order, residuals)
            assert not grid.any()
    residuals[7] = 0
    if lc._compiled is not None:  # the C loop checks the indices it follows
        for bad_points, bad_order in ((np.r_[points[:-1], 50], order), (points, np.r_[order[:-1], 60])):
            with pytest.raises(ValueError, match="outside the phase"):
                lc.place(np.zeros((3, 50), np.int16), bad_points, centre, bad_order, residuals)


def test_the_fused_synthesis_gives_the_numpy_bits(monkeypatch):
    """The extension's fused elementwise steps (a layer's bias and GELU, the last layer's output
    added to the coefficients, the mean and the block's affine, the coefficient images' filters and pulls,
    the latents interpolated at the pixels) give numpy's bits: values of many magnitudes, and zeros of both signs, infinities, NaN and a subnormal;
    images of one row or column, and wider than high (the filters' and pulls' NaN as NaN: a sum of two NaN
    is either's, whichever the compiler reads first, and no stream's integer images meet a NaN)."""
    if grid_model._compiled is None:
        assert shutil.which("cc") is None and shutil.which("gcc") is None, "a C compiler is here: build the extension"
        pytest.skip("built without a C compiler: decoding runs numpy")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 24)) * 10.0 ** rng.integers(-8, 4, (300, 24))
    x.flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324]
    bias, features = rng.standard_normal(24), rng.standard_normal((300, 30)) * 3
    values, mean = rng.standard_normal((20, 300)) * 100, rng.standard_normal(20)
    assert grid_model._fusable(x, bias) and grid_model._fusable(values, mean, axis=0)
    images = [rng.standard_normal((k, h, w)) * 10.0 ** rng.integers(-6, 4, (k, h, w))
              for k, h, w in ((3, 17, 29), (2, 1, 7), (1, 6, 1), (1, 1, 1), (4, 2, 2))]
    images[0].flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324]
    taps = [rng.standard_normal((len(image), 9)) * 10.0 ** rng.integers(-4, 2, (len(image), 9)) for image in images]
    locations = [image + rng.standard_normal(image.shape) * 10.0 ** rng.integers(-3, 2, image.shape) for image in images]
    locations[1].flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    pulls = [rng.standard_normal((len(image), 2)) for image in images]
    grids = [np.round(rng.standard_normal((5, 37, 53)) * 9), rng.standard_normal((3, 19, 27)), np.zeros((0, 10, 14)),
             rng.standard_normal((2, 5, 7)) * 1e3]
    grids[1].flat[:4] = [np.nan, np.inf, -0.0, 5e-324]
    positions = [(np.arange(37.0), np.arange(53.0)), (np.array([0.3, 5.5, 36.9, -2.0, 1e300]), np.array([0.0, 1.25, 52.0])),
                 (np.arange(0, 37, 3.0), np.arange(1, 53, 2.0))]

    def steps():
        return [grid_model.gelu(x.copy(), bias), grid_model._added_output(features, x[:, :19].copy(), bias[:19]),
                grid_model._spectra(values.copy(), mean, (0.37, -12.5)), grid_model._spectra(values.copy(), mean, None),
                *(grid_model.filter_images(image, tap) for image, tap in zip(images, taps)),
                *(grid_model.pull_images(image, at, pull) for image, at, pull in zip(images, locations, pulls)),
                grid_model.pull_images(images[0][:, ::2, 1::3], locations[0][:, ::2, 1::3], pulls[0]),  # strided
                *(grid_model.upsampled_features(SPEC, grids, ys, xs) for ys, xs in positions)]

    with np.errstate(all="ignore"):  # as decode_block: inf * 0 and the like
        fused = steps()
        monkeypatch.setattr(grid_model, "_compiled", None)
        unfused = steps()
    for got, expected in [*zip(fused[:4], unfused[:4]), *zip(fused[-3:], unfused[-3:])]:
        assert got.tobytes() == expected.tobytes()
    assert np.isnan(fused[4]).any() and np.isnan(fused[10]).any()
    for got, expected in zip(fused[4:-3], unfused[4:-3], strict=True):  # any NaN as NaN
        assert np.where(np.isnan(got), np.nan, got).tobytes() == np.where(np.isnan(expected), np.nan, expected).tobytes()


def test_numpy_decoder_matches_the_torch_model():
    model, latents, synthesis, arm, basis, mean, taps = random_model(SPEC)
    with torch.no_grad():
        values, _ = model([torch.from_numpy(z[None].astype(np.float32)) for z in latents])
        bits = model.latent_bits([torch.from_numpy(z[None].astype(np.float32)) for z in latents]).item()
    ys, xs = np.arange(SPEC.height, dtype=float), np.arange(SPEC.width, dtype=float)
    decoded = synthesise(SPEC, latents, 0.05, synthesis, basis, mean, ys, xs, taps=taps)  # (training has no pulls)
    assert np.allclose(decoded, values[0].numpy().T.reshape(decoded.shape), atol=1e-4)
    # the integer ARM and the fixed tables are within a few percent of the float model
    exact = lc.latent_bits(SPEC, lc.CodingModel(lc.prepare_arm(integer_arm(arm), 3), 3), latents)
    assert abs(exact - bits) <= 0.05 * bits + 16
    # training's sampled estimates (every 8th point, a different eighth each step) add up to the full count
    with torch.no_grad():
        sampled = [model.latent_bits([torch.from_numpy(z[None].astype(np.float32)) for z in latents], 8, start).item()
                   for start in range(8)]
    assert np.mean(sampled) == pytest.approx(bits, rel=1e-4)


def test_latents_round_trip_through_the_entropy_coder():
    _, latents, _, arm, _, _, _ = random_model(SPEC, seed=1)
    prepared = lc.prepare_arm(integer_arm(arm), 3)
    encoder = entropy.new_encoder()
    lc.encode_latents(SPEC, prepared, 3, latents, encoder)
    decoded, locations = lc.decode_latents(SPEC, prepared, 3, entropy.new_decoder(entropy.stream_bytes(encoder)))
    for a, b in zip(latents, decoded, strict=True):
        assert np.array_equal(a, b)
    # the coder's locations, as the decoder met them phase by phase and as the encoder finds them at once
    assert np.array_equal(locations, lc.latent_locations(SPEC, lc.CodingModel(prepared, 3), latents))
    assert locations.shape == latents[0][: SPEC.components].shape and np.any(locations % 1)


def test_a_pull_moves_a_latent_towards_the_coders_location_by_its_clipped_distance():
    """docs/format.md: each latent plus pull[r, 0] clip(d, -1/2, 1/2) + pull[r, 1] clip(d, -2, 2),
    d its location less itself."""
    images = np.array([[[0.0, 3.0, -1.0]]])
    locations = np.array([[[0.25, 0.0, -1.0]]])  # d = 0.25, -3, 0
    pulled = pull_images(images, locations, np.array([[0.5, 0.25]]))
    assert np.array_equal(pulled, [[[0.0 + 0.125 + 0.0625, 3.0 - 0.25 - 0.5, -1.0]]])


def test_payload_round_trip_and_corruption():
    _, latents, synthesis, arm, basis, mean, taps = random_model(SPEC, seed=2)
    params = {"mean": (3, np.round(mean * 8).astype(np.int64)), "filter": (3, np.round(taps * 8).astype(np.int64)),
              "pull": (3, np.array([[2, -1], [0, 3], [1, 1]]))}
    for r in range(SPEC.components):
        params[f"basis{r}"] = (3, np.round(basis[r] * 8).astype(np.int64))
    for prefix, layers in (("synthesis", synthesis), ("arm", arm)):
        for i, (w, b) in enumerate(layers):
            params[f"{prefix}{i}.weight"] = (3, np.round(w * 8).astype(np.int64))
            params[f"{prefix}{i}.bias"] = (3, np.round(b * 8).astype(np.int64))
    payload = pack(SPEC, 0.05, params, latents)
    spec, step, mean2, basis2, taps2, synthesis2, latents2 = unpack(payload, SPEC.bands, SPEC.height, SPEC.width)
    assert spec == SPEC and step == 0.05
    assert np.allclose(mean2, mean) and np.allclose(basis2, basis) and np.allclose(taps2, taps)
    # the coefficient images come back pulled towards the coder's locations
    locations = lc.latent_locations(SPEC, lc.CodingModel(*arm_from_params(params, SPEC)), latents)
    pulled = pull_images(latents[0][:3], locations, params["pull"][1] / 8)
    assert np.array_equal(latents2[0], np.concatenate([pulled, latents[0][3:]]))
    assert not np.array_equal(pulled, latents[0][:3])
    assert all(np.array_equal(a, b) for a, b in zip(latents[1:], latents2[1:], strict=True))
    ys, xs = np.arange(9.0), np.arange(11.0)
    assert decode(AFFINE.pack(0.0, 1.0) + payload, (7, 9, 11), ys, xs).shape == (7, 9, 11)
    big = {**params, "basis1": (24, np.round(basis[1] * 2**24).astype(np.int64))}  # escapes
    assert np.allclose(unpack(pack(SPEC, 0.05, big, latents), 7, 9, 11)[3], basis)
    with pytest.raises(StreamError):
        unpack(payload[:-3], SPEC.bands, SPEC.height, SPEC.width)
    with pytest.raises(StreamError):
        unpack(payload + b"\0", SPEC.bands, SPEC.height, SPEC.width)
    options = 4 + len(SPEC.channels)  # the head's options byte (format version 3 on): unknown bits are refused
    assert payload[options] == 3
    with pytest.raises(StreamError, match="unknown grid options"):
        unpack(payload[:options] + b"\x07" + payload[options + 1:], SPEC.bands, SPEC.height, SPEC.width)
    with pytest.raises(StreamError, match="unknown grid options 0x03 for format version 3"):  # pulls: version 4 on
        unpack(payload, SPEC.bands, SPEC.height, SPEC.width, version=3)
    # a version-3 payload has no pulls; a version-2 payload has no options byte, and no filters
    filtered = GridSpec(**{**SPEC.__dict__, "pulled": False})
    version3 = pack(filtered, 0.05, {n: v for n, v in params.items() if n != "pull"}, latents)
    assert unpack(version3, SPEC.bands, SPEC.height, SPEC.width, version=3)[0] == filtered
    plain = GridSpec(**{**SPEC.__dict__, "filtered": False, "pulled": False})
    version2 = pack(plain, 0.05, {n: v for n, v in params.items() if n not in ("filter", "pull")}, latents)
    version2 = version2[:options] + version2[options + 1:]
    assert unpack(version2, SPEC.bands, SPEC.height, SPEC.width, version=2)[0] == plain


def test_architecture_grows_with_the_budget():
    small = choose_spec(198, 100, 100, 0.02 * 198e4)
    large = choose_spec(198, 100, 100, 0.2 * 198e4)
    assert small.components < large.components
    assert choose_spec(10, 5, 5, 100.0).components == 3  # the smallest, however tight
    assert choose_spec(4, 30, 30, 1e6).components == 4  # never more components than bands


def test_water_filling_gives_each_image_the_bits_of_its_coefficients_above_the_water_level():
    # three images of four transform coefficients each; their powers times SCALAR_LOSS are powers of 2
    spectrum = np.array([[256.0, 256.0, 0.0, 0.0], [16.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]) / SCALAR_LOSS
    # 2 bits per pixel, 8 in all: log2 theta = 4/3 (0.5 (8 + 8 + 4 - 3 log2 theta) = 8), under the third
    # coefficient's 4 and over the fourth's 0: the images get 20/3, 4/3 and no bits
    np.testing.assert_allclose(water_filling_bits(spectrum, 2.0), np.array([20, 4, 0]) / 3 / 4)
    # 10 bits per pixel: every coefficient coded (log2 theta = -15)
    np.testing.assert_allclose(water_filling_bits(spectrum, 10.0), np.array([23, 9.5, 7.5]) / 4)
    np.testing.assert_array_equal(water_filling_bits(np.zeros((3, 4)), 2.0), np.zeros(3))
    assert choose_spec(198, 100, 100, 0.2 * 198e4, spectrum=spectrum).components == 3  # k capped by the images
    assert choose_spec(198, 100, 100, 0.2 * 198e4).components == 20


def test_water_filling_sorts_only_the_largest_coefficients_and_gives_what_a_sort_of_all_gives():
    def sorting_all(spectrum, bits_per_pixel):  # the water-filling with every coefficient sorted
        live = SCALAR_LOSS * spectrum
        logs = np.log2(np.where(live > 0, live, np.nan))
        ranked = np.sort(logs[live > 0])[::-1]
        levels = (np.cumsum(ranked) - 2 * bits_per_pixel * live.shape[1]) / np.arange(1, ranked.size + 1)
        n = np.flatnonzero(levels < ranked)[-1]
        return 0.5 * np.nan_to_num(np.maximum(logs - levels[n], 0)).sum(axis=1) / live.shape[1]

    rng = np.random.default_rng(5)
    # a PCA-like spectrum: powers falling over the images, many zeros, and ties
    spectrum = np.round(rng.exponential(1.0, (60, 4096)) * 10.0 ** -np.arange(60)[:, None] * 1e6, 1)
    spectrum[:, ::7] = 0.0
    tried = 0
    for bits_per_pixel in (0.01, 0.3, 2.0, 9.0, 40.0, 200.0, 1e4):  # a few coefficients coded, to all of them
        expected = sorting_all(spectrum, bits_per_pixel)
        np.testing.assert_array_equal(water_filling_bits(spectrum, bits_per_pixel), expected)
        tried += expected.any()
    assert tried == 7
    flat = np.ones((8, 4096))  # every coefficient coded with a few bits: the sort grows to all of them
    np.testing.assert_array_equal(water_filling_bits(flat, 0.3), sorting_all(flat, 0.3))
    np.testing.assert_allclose(water_filling_bits(flat, 0.3), 0.3 / 8)


def test_an_image_is_worth_coding_when_its_bits_pay_for_its_basis_vector_and_its_decoding():
    # 10,000 pixels, 100 bands: a basis vector costs 400 bits, 0.04 bits per pixel
    assert components_worth_coding(np.array([1.0, 0.5, 0.3, 0.25, 0.2, 0.1, 0.05, 0.01]), 100, 10_000) == 5
    assert components_worth_coding(np.array([1.0, 0.5, 0.15, 0.1, 0.05, 0.01]), 100, 10_000) == SPECTRAL_IMAGES
    assert components_worth_coding(np.array([1.0, 0.3, 0.15, 0.1, 0.05]), 1000, 10_000) == 1  # 0.4 bits each
    assert components_worth_coding(np.zeros(5), 100, 10_000) == 1


def test_choose_spec_leaves_out_the_images_with_too_few_bits_per_pixel_to_decode(monkeypatch):
    # 100 x 100 pixels: a strong image with all 10,000 transform coefficients, five weak ones with 100
    # each; at 7.1 bits per pixel the weak ones' coefficients get 2 bits each: 0.02 bits per pixel
    spectrum = np.zeros((6, 10_000))
    spectrum[0], spectrum[1:, :100] = 2.0**20 / SCALAR_LOSS, 2.0**10 / SCALAR_LOSS
    budget = 7.1 * 10_000 / (1 - FIXED_SHARE)
    np.testing.assert_allclose(water_filling_bits(spectrum, 7.1), [7.0] + [0.02] * 5)
    assert choose_spec(8, 100, 100, budget, spectrum=spectrum).components == SPECTRAL_IMAGES
    monkeypatch.setattr(payload, "MIN_IMAGE_BITS", 0.0)
    assert choose_spec(8, 100, 100, budget, spectrum=spectrum).components == 6


def test_coefficient_spectrum_keeps_each_tiles_energy_and_tells_smooth_images_from_noise():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:20, :27]
    smooth, noise = np.sin(y / 6.0) + np.cos(x / 7.0), 0.3 * rng.normal(size=(20, 27))
    values = np.stack([smooth.ravel(), noise.ravel()], 1) @ np.array([[1.0] * 6, [1.0, -1.0] * 3])  # 6 bands
    spectrum = fitting.coefficient_spectrum(values, (20, 27), 6)
    assert spectrum.shape == (6, 16 * 24)  # whole 8 x 8 squares only
    mean, basis = fitting.pca(values, 6)
    images = (basis @ (values - mean).T).reshape(6, 20, 27)[:, :16, :24]
    np.testing.assert_allclose(spectrum.sum(1), np.square(images).sum((1, 2)))  # an orthonormal transform
    # a smooth image's energy sits in few coefficients: as many bits buy it far less error than noise
    top = np.sort(spectrum, axis=1)[:, ::-1]
    shares = top[:, :32].sum(1) / top.sum(1)
    assert shares[0] > 0.99 and shares[1] < 0.5  # the largest 32 of 384 squares of white noise hold about 35 %
    assert fitting.coefficient_spectrum(values[:15], (3, 5), 2).shape == (2, 9)  # a square no larger than the block


def test_grid_codec_beats_the_paper_siren_on_a_jasper_crop(jasper_cube):
    crop = jasper_cube[:, :40, :40]
    grid = INRCodec(bpppb=0.2, steps=300).encode(crop)
    siren = INRCodec(bpppb=0.2, method="siren", steps=300, search_steps=0, lr=1e-3).encode(crop)
    for buf in (grid, siren):
        assert 8 * len(buf) <= 0.2 * crop.size  # every byte counted
    decoded = decode_block(grid)
    assert decoded.dtype == np.uint16 and decoded.shape == crop.shape
    info = inspect(grid)
    assert info["method"] == "grid" and info["parameter_bytes"] + info["latent_bytes"] < info["nbytes"]
    # measured: grid 42.9 dB / 2.4 deg, siren 29.3 dB / 6.2 deg
    assert psnr(crop, decoded) > psnr(crop, decode_block(siren)) + 6
    assert sam_deg(crop, decoded) < sam_deg(crop, decode_block(siren))


def test_very_high_rates_stay_under_budget():
    rng = np.random.default_rng(4)
    images = np.cumsum(rng.normal(size=(3, 16, 16)), axis=1)  # three rough images mixed into 12 bands
    cube = np.einsum("kyx,kb->byx", images, rng.uniform(0.5, 1.5, size=(3, 12))).astype(np.float32)
    buf = INRCodec(bpppb=6.0, steps=30).encode(cube)
    assert 8 * len(buf) <= 6.0 * cube.size and inspect(buf)["method"] == "grid"
    assert psnr(cube, decode_block(buf)) > 45  # measured 65 dB at 4.1 bpppb: the finest step allowed


def test_grid_decodes_any_grid_consistently():
    rng = np.random.default_rng(3)
    cube = np.cumsum(np.cumsum(rng.normal(size=(6, 20, 24)), axis=1), axis=2).astype(np.float32)
    buf = INRCodec(bpppb=1.0, steps=60).encode(cube)
    full = decode_block(buf)
    sub = decode_block(buf, ys=np.array([0.0, 7.0, 19.0]), xs=np.array([3.0, 23.0]))
    assert np.allclose(sub, full[:, [0, 7, 19]][:, :, [3, 23]])
    half = decode_block(buf, ys=np.array([2.5]), xs=np.array([4.0]))
    assert half.shape == (6, 1, 1) and np.isfinite(half).all()


def test_grid_with_nan_pixels_keeps_them_nan():
    cube = np.linspace(0, 1, 5 * 12 * 12, dtype=np.float32).reshape(5, 12, 12)
    cube[:, 3, 4] = np.nan
    out = decode_block(INRCodec(bpppb=4.0, steps=40).encode(cube))
    assert np.isnan(out[:, 3, 4]).all() and np.isfinite(np.delete(out.reshape(5, -1), 3 * 12 + 4, axis=1)).all()


def test_siren_options_are_refused_for_the_grid_method():
    with pytest.raises(ValueError, match="siren"):
        INRCodec(bpppb=0.1, depth=3)
    with pytest.raises(ValueError, match="grid"):
        INRCodec(bpppb=0.1, method="siren", components=4)


def test_budget_warning_when_even_the_smallest_model_is_too_large():
    cube = np.random.default_rng(0).normal(size=(30, 4, 4)).astype(np.float32)
    with pytest.warns(BudgetWarning):
        INRCodec(bpppb=0.05, steps=5).encode(cube)


def test_pca_directions_match_the_svd_and_products_match_numpy():
    """pca (scatter matrix summed in single-threaded blocks, then eigh) gives the SVD's directions
    up to sign; rows past min(pixels, bands) are zero; the blocked products equal numpy's."""
    from xr_inr.core.products import gram, matmul
    from xr_inr.pca import pca

    rng = np.random.default_rng(3)
    values = rng.standard_normal((3000, 40)) @ rng.standard_normal((40, 40)) + 5.0
    mean, basis = pca(values, 6)
    _, _, vt = np.linalg.svd(values - values.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs((basis * vt[:6]).sum(1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(mean, values.mean(0))
    _, few = pca(values[:3], 6)
    assert np.all(few[3:] == 0) and np.all(np.abs(few[:3]).sum(1) > 0)
    np.testing.assert_allclose(gram(values), values.T @ values, rtol=1e-12)
    a, b = rng.standard_normal((300, 900)), rng.standard_normal((900, 70))
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(matmul(b.T, a.T), (a @ b).T, rtol=1e-12, atol=1e-9)


def test_blocks_of_one_architecture_are_fitted_together_each_within_its_own_budget(jasper_crop, monkeypatch):
    """The batched fit (what a GPU runs, here on the CPU): blocks with the same spec share one
    GridTraining, each keeps its own loss, step and budget, and comes out as good as alone."""
    from xr_inr.core.encode import encode_blocks

    cube = jasper_crop.astype(np.float32)
    cube[:, 30:33, 30:34] = np.nan  # a masked block among unmasked ones
    blocks = [cube[:, :20, :20], cube[:, 20:, :20], cube[:, 20:, 20:], cube[:, :20, 20:32]]
    codec = INRCodec(bpppb=1.0, steps=30)
    batches = []
    training = fitting.GridTraining

    def spy(targets, *args, **kwargs):
        batches.append([t.shape for t in targets])
        return training(targets, *args, **kwargs)

    monkeypatch.setattr(fitting, "GridTraining", spy)
    together = encode_blocks(codec, blocks)
    assert sorted(len(b) for b in batches) == [1, 3] and all(len(set(b)) == 1 for b in batches)
    alone = [codec.encode(block) for block in blocks]
    for block, (stream, caught), single in zip(blocks, together, alone, strict=True):
        assert not caught and 8 * len(stream) <= 1.0 * block.size
        decoded = decode_block(stream)
        assert decoded.shape == block.shape and np.array_equal(np.isnan(decoded), np.isnan(block))
        valid = ~np.isnan(block)
        assert psnr(block[valid], decoded[valid]) > psnr(block[valid], decode_block(single)[valid]) - 1.0


def test_a_batchs_cpu_work_in_threads_gives_the_streams_of_one_thread(jasper_crop, monkeypatch):
    """A batch's architecture rule, set-up and packing run block by block in threads (``per_block``):
    the same bytes as one block after another."""
    from xr_inr.core.encode import encode_blocks

    blocks = [jasper_crop[:, :20, :20], jasper_crop[:, 20:, :20], jasper_crop[:, 20:, 20:]]
    codec = INRCodec(bpppb=1.0, steps=30)
    calls = []
    threaded = fitting.per_block

    def counted(function, items):
        calls.append(len(items))
        return threaded(function, items)

    monkeypatch.setattr(fitting, "per_block", counted)
    in_threads = encode_blocks(codec, blocks)
    assert max(calls) == 3
    monkeypatch.setattr(fitting, "per_block", lambda function, items: [function(item) for item in items])
    assert encode_blocks(codec, blocks) == in_threads


def test_the_exponent_search_from_a_hint_finds_what_bisection_finds_in_two_tries_when_right():
    """Packings of the same model search their parameters' exponents from the last packing's
    (``hint``): the answer is bisection's for any hint (``good`` monotone), in 2 tries when the hint is it."""
    from xr_inr.methods.grid.payload import _coarsest

    for finest in (2, 3, 9, 30):
        for answer in range(2, finest + 1):
            tried = []

            def good(e):
                tried.append(e)
                return e >= answer

            expected = _coarsest(good, finest)
            assert expected == answer
            for hint in [None, *range(0, finest + 3)]:
                tried.clear()
                assert _coarsest(good, finest, hint) == answer, (finest, answer, hint)
                if hint == answer and answer < finest:
                    assert len(tried) <= 2


def test_a_batchs_threads_run_numpys_blas_on_one_thread_each_and_give_the_count_back():
    """Threads each multiplying on every core slow each other down (packing took 1.6x as long in two
    threads): while ``per_block`` runs blocks in threads, BLAS runs on one thread; after, as before."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads(_=None):
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    user = threadpool_limits(limits=2, user_api="blas")
    try:
        assert blas_threads() == {2}
        assert fitting.per_block(blas_threads, [0, 1, 2]) == [{1}] * 3
        assert blas_threads() == {2}
        assert fitting.per_block(blas_threads, [0]) == [{2}]  # one block: no threads, the count as set
    finally:
        user.restore_original_limits()


def test_training_steps_copy_lambda_and_the_steps_to_the_device_only_when_they_change(jasper_crop, monkeypatch):
    """A copy to a GPU waits for it: a training step must not make one when lambda and the steps are
    those of the step before (the same values either way)."""
    target = (jasper_crop - jasper_crop.min()) / np.ptp(jasper_crop)
    spec = fitting.block_spec(target, None, 1.0 * target.size)
    training = fitting.GridTraining([target], [None], spec, [0.5 * target.size])
    training._step("noise", 1.0, 0)  # the first step copies lambda
    made = []
    tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *args, **kwargs: made.append(args) or tensor(*args, **kwargs))
    for iteration in range(1, 9):  # lambda is steered at the 10th step
        training._step("noise", 1.0, iteration)
    assert len(made) == 0
    training.model.steps[0] *= 2
    training._log_lmbda[0] += 0.1
    training._step("noise", 1.0, 0)
    assert len(made) == 2


def test_a_blocks_loss_reaches_only_its_own_parameters():
    model = GridModel(SPEC, [0.05, 0.1], np.zeros((2, SPEC.bands)), np.ones((2, SPEC.components, SPEC.bands)),
                      np.ones((2, SPEC.height * SPEC.width, SPEC.components)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    latents = model.quantised("noise", [torch.Generator().manual_seed(s) for s in (1, 2)])
    values, _ = model(latents)
    (values[0].square().sum() + model.latent_bits(latents)[0]).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:  # the pulls are solved, not trained
            assert p.grad[0].any() and not p.grad[1].any(), name


def test_the_training_distortion_from_the_coefficients_is_the_values_mse(jasper_crop, monkeypatch):
    """Training's distortion of unmasked blocks, computed from the coefficients alone, is the mean
    squared error of the values, each block's, with the same gradient; a masked block's is the
    values'. Its rate term samples at most RATE_ROWS latents a step."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    valid = np.ones(target.shape, bool)
    valid[:, :3] = False
    budget = 0.2 * target.size
    spec = fitting.block_spec(target, None, budget)
    monkeypatch.setattr(fitting, "RATE_ROWS", 100)
    for valids in ([None, None], [None, valid]):
        training = fitting.GridTraining([target, target[:, ::-1].copy()], valids, spec, [0.9 * budget] * 2)
        rows = training.model.contexts.shape[0]
        assert training._rate_every == max(fitting.RATE_SAMPLE, -(-rows // 100)) > fitting.RATE_SAMPLE
        training.train(8)  # a fit under way: residuals far below the values
        latents = training.model.quantised("round")
        results = []
        for distortion in (lambda: training._training_distortion(latents),
                           lambda: training._distortion(training.model(latents)[0])):
            training.model.zero_grad()
            value = distortion()
            value.sum().backward()
            results.append((value.detach(), [p.grad.clone() for p in training.model.parameters() if p.grad is not None]))
        (fast, fast_grads), (slow, slow_grads) = results
        assert torch.allclose(fast, slow, rtol=1e-4) and len(fast_grads) == len(slow_grads)
        for a, b in zip(fast_grads, slow_grads, strict=True):
            assert (a - b).norm() <= 2e-3 * b.norm() + 1e-12  # float32: the formula cancels large terms


@pytest.mark.parametrize("scale", [0.0, 0.4, 3.0, 60.0, 1e4, 1e7])
def test_the_static_bit_estimate_is_the_sum_of_each_residuals_bits(scale):
    """estimate_bits, in closed form, is the sum over the residuals of -log2 of their Laplace bin's
    probability (at least 2**-16): zeros, small and capped residuals, images of one pixel."""
    rng = np.random.default_rng(3)
    sparse = np.zeros((1, 6, 6))
    sparse[0, ::3, ::3] = scale * 1e5  # many zero residuals, whose bits reach the cap at huge scales
    for images in [np.round(rng.laplace(size=shape) * scale + np.cumsum(rng.normal(size=shape), 2) * scale)
                   for shape in ((4, 30, 20), (2, 1, 1), (3, 1, 7))] + [sparse]:
        padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
        expected = 0.0
        for r in images - np.round(0.5 * (padded[:, 1:, :-1] + padded[:, :-1, 1:])):
            b = max(np.abs(r).mean(), 1e-3)
            probability = 0.5 * (np.sign(r + 0.5) * -np.expm1(-np.abs(r + 0.5) / b)
                                 - np.sign(r - 0.5) * -np.expm1(-np.abs(r - 0.5) / b))
            expected += -np.log2(np.maximum(probability, 2.0**-16)).sum()
        assert fitting.estimate_bits(images) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_steering_and_step_repicks_read_a_sample_of_the_latents(jasper_crop, monkeypatch):
    """Above STEER_ROWS latents, λ's steering and the step's re-picks estimate the rounded latents' bits
    from every n-th latent, each time another n-th: unbiased, near the bits of all of them."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget = 0.2 * target.size
    monkeypatch.setattr(fitting, "STEER_ROWS", 1000)
    training = fitting.GridTraining([target], [None], fitting.block_spec(target, None, budget), [0.9 * budget])
    rows = training.model.contexts.shape[0]
    assert training._steer_every == -(-rows // 1000) > 1
    training.train(8)
    rounded = [torch.round(z) for z in training.model.latents]
    with torch.no_grad():
        exact = training.model.latent_bits(rounded).item()
        every = training._steer_every
        sampled = [training.model.latent_bits(rounded, every, start).item() for start in range(every)]
    assert len(set(sampled)) == every and all(abs(s / exact - 1) < 0.2 for s in sampled)
    assert sum(sampled) / every == pytest.approx(exact, rel=1e-5)  # the samples split the latents between them
    steps, retunes = list(training.model.steps), training._retunes
    training._retune_steps()  # the next sample
    assert training.model.steps != steps and training._retunes == retunes + 1


def test_each_block_ends_training_in_its_best_rounded_state(jasper_crop, monkeypatch):
    """The rounded latents' phase can raise a block's rate and error: each block of a batch ends training
    in the state, of those offered (the end of the noisy phase, then every 10 steps), of least MSE +
    λ bits / values with its latents rounded; here block 0's rounded phase is spoilt, block 1's is not."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget = 0.2 * target.size
    training = fitting.GridTraining([target, target[:, ::-1].copy()], [None, None],
                                    fitting.block_spec(target, None, budget), [0.9 * budget] * 2)
    step, state, offered = fitting.GridTraining._step, fitting.GridTraining.rounded_state, []

    def spoilt_step(self, mode, lr_scale, iteration):
        step(self, mode, lr_scale, iteration)
        if mode == "round":
            with torch.no_grad():
                self.model.latents[0][0] += torch.randint(-3, 4, self.model.latents[0][0].shape,
                                                          generator=torch.Generator().manual_seed(iteration))

    def recorded_state(self):
        offered.append([torch.round(z).clone() for z in self.model.latents])
        return state(self)

    monkeypatch.setattr(fitting.GridTraining, "_step", spoilt_step)
    monkeypatch.setattr(fitting.GridTraining, "rounded_state", recorded_state)
    training.train(40)  # offered after steps 32 (the end of the noisy phase) and 40
    final = [torch.round(z) for z in training.model.latents]
    assert len(offered) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(final, offered[0]))  # spoilt: back to the noisy phase's end
    assert not torch.equal(final[0][0], offered[1][0][0])
    assert any(all(torch.equal(a[1], b[1]) for a, b in zip(final, state)) for state in offered)


@pytest.mark.parametrize("hidden", [0, 8])
def test_the_pulls_filters_basis_and_mean_are_solved_by_least_squares_for_the_coded_latents(jasper_crop, hidden,
                                                                                             monkeypatch):
    """Packing solves a block's pulls towards the coder's locations, then its filter taps (the synthesis MLP's
    output held), then its basis and mean, for its integer latents, each kept where the MSE falls: without an
    MLP (and without the ridge) no small change of any of them lowers the MSE; with one, the MSE falls."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget = 0.2 * target.size
    spec = fitting.block_spec(target, None, budget)
    spec = GridSpec(**{**spec.__dict__, "channels": (0, 1, 1) if hidden else (0,), "hidden": hidden})
    assert spec.pulled and spec.filtered and spec.hidden == hidden
    training = fitting.GridTraining([target], [None], spec, [0.9 * budget])
    [fit] = training.train(30).results()
    prepared, e = arm_from_params(quantised_parameters(fit, target, None)[0], spec)
    locations = lc.latent_locations(spec, lc.CodingModel(prepared, e), fit.latents)
    monkeypatch.setattr(solve, "RIDGE", 1e-12)
    parts = solve.solved_linear_parts(fit, target, locations)
    ys, xs = np.arange(spec.height, dtype=float), np.arange(spec.width, dtype=float)

    def mse(pull, taps, basis, mean):
        images = pull_images(fit.latents[0][: spec.components], locations, pull)
        latents = [np.concatenate([images, fit.latents[0][spec.components :]]), *fit.latents[1:]]
        values = synthesise(spec, latents, fit.step, fit.synthesis, basis, mean, ys, xs, taps=taps)
        return np.mean((values - target) ** 2)

    solved = (parts.pull, parts.taps, parts.basis, parts.mean)
    assert mse(*solved) == pytest.approx(parts.mse, rel=1e-9)
    trained = mse(np.zeros((spec.components, 2)), fit.taps, fit.basis, fit.mean)
    assert parts.mse < trained and np.abs(parts.pull).max() > 0.05
    every_pixel = solve.SOLVE_PIXELS
    monkeypatch.setattr(solve, "SOLVE_PIXELS", 800)  # the equations from every other pixel: most of the gain
    sampled = solve.solved_linear_parts(fit, target, locations)
    assert parts.mse <= sampled.mse < parts.mse + 0.5 * (trained - parts.mse)
    monkeypatch.setattr(solve, "SOLVE_PIXELS", every_pixel)
    if hidden:
        return
    start = (np.zeros((spec.components, 2)), fit.taps, fit.basis, fit.mean)

    def gradient(point, part):  # central differences of the MSE in each value of one part
        out = np.zeros(point[part].size)
        for i in range(out.size):
            step = np.zeros(out.size)
            step[i] = 1e-4
            ahead, behind = list(point), list(point)
            ahead[part] = point[part] + step.reshape(point[part].shape)
            behind[part] = point[part] - step.reshape(point[part].shape)
            out[i] = (mse(*ahead) - mse(*behind)) / 2e-4
        return np.linalg.norm(out)

    for name, which in (("pull", (0,)), ("taps", (1,)), ("basis", (2, 3))):  # each alone, the others as trained
        alone = solve.solved_linear_parts(fit, target, locations, (name,))
        at = (alone.pull, alone.taps, alone.basis, alone.mean)
        assert alone.mse < trained
        for part in which:  # at its least squares: the gradient vanishes there
            assert gradient(at, part) < 1e-4 * gradient(start, part), (name, part)


def test_an_over_budget_stream_first_moves_latents_off_their_rounding_boundaries(jasper_crop):
    """Over its budget after training, a stream is brought within it by rounding the fewest latents
    near a rounding boundary to their other neighbour, the one nearer the ARM's location, before any
    coarser step (which re-rounds every latent)."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget = 0.2 * target.size
    training = fitting.GridTraining([target], [None], fitting.block_spec(target, None, budget), [0.9 * budget])
    training.train(60)
    indices, values = training.boundary_moves(0)
    latents = training.block_latents(0)
    rounded = torch.round(latents)
    location = training.model.locations([torch.round(z) for z in training.model.latents])[0]
    gaps = 0.5 - (latents[indices] - rounded[indices]).abs()
    assert len(indices) > 10 and (gaps < fitting.TRIM_BAND).all() and (gaps[1:] >= gaps[:-1]).all()
    assert ((values - rounded[indices]).abs() == 1).all()
    assert ((values - location[indices]).abs() < (rounded[indices] - location[indices]).abs()).all()

    fit = training.results()[0]
    natural = 8 * len(pack(training.spec, fit.step, quantised_parameters(fit, target, None)[0], fit.latents))
    step = training.model.steps[0]
    tight = natural / (1 + 0.3 * (1 - fitting.FILL))  # 0.3 % under the trained stream
    [payload] = fitting.pack_within_budget(training, [target], [None], [tight], [0.0])
    assert training.model.steps[0] == step  # no coarser step was needed
    assert fitting.FILL * tight <= 8 * len(payload) <= tight
    assert torch.equal(training.block_latents(0), latents)  # the training's latents are left as they were


def test_the_best_effort_also_fits_the_architecture_whose_brief_fit_decodes_best(jasper_crop, monkeypatch):
    """searched_spec fits the rule's spec and its neighbours in k briefly and returns the one whose stream
    decodes with the least error; effort "best" then fits the block with the rule's spec and that one, and
    keeps the better stream; the other efforts do not search."""
    cube = jasper_crop.astype(np.float64)
    target = (cube - cube.min()) / (cube.max() - cube.min())
    budget, fixed = 0.4 * target.size, 480.0
    spec = fitting.block_spec(target, None, budget)
    tried, fit_batch = [], fitting.fit_batch

    def recording(candidate, *args, **kwargs):
        payloads = fit_batch(candidate, *args, **kwargs)
        tried.append((candidate, payloads[0]))
        return payloads

    monkeypatch.setattr(fitting, "fit_batch", recording)
    chosen = fitting.searched_spec(spec, target, None, budget, fixed, steps=6)
    ks = [candidate.components for candidate, _ in tried]
    assert ks[0] == spec.components and len(set(ks)) == len(ks) == 3 and min(ks) < spec.components < max(ks)
    errors = [np.mean((decode(AFFINE.pack(0.0, 1.0) + payload, target.shape, np.arange(40), np.arange(40)) - target) ** 2)
              for _, payload in tried]
    assert chosen == tried[int(np.argmin(errors))][0]

    other = tried[1][0]  # the full fit: the rule's spec and another, the better stream kept
    monkeypatch.setattr(fitting, "searched_spec", lambda spec, *args: other)
    tried.clear()
    [payload] = fitting.fit_and_pack([target], [None], [budget], [fixed], steps=6, search_steps=3)
    assert [candidate for candidate, _ in tried] == [spec, other]
    errors = [fitting.stream_error(p, target, None, budget - fixed) for _, p in tried]
    assert payload == tried[errors.index(min(errors))][1] and errors[0] != errors[1]

    searched = []
    monkeypatch.setattr(fitting, "searched_spec", lambda spec, *args: searched.append(args[4]) or spec)
    monkeypatch.setattr(fitting, "SEARCH_STEPS", 3)
    for effort in ("fast", "best"):
        INRCodec(bpppb=0.3, effort=effort, steps=4).encode(jasper_crop)
    assert searched == [3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (the batched path is tested on the CPU above)")
def test_a_batch_fits_on_cuda(jasper_crop):
    from xr_inr.core.encode import encode_blocks

    cube = jasper_crop.astype(np.float32)
    blocks = [cube[:, :20, :20], cube[:, 20:, :20], cube[:, 20:, 20:]]
    for block, (stream, caught) in zip(blocks, encode_blocks(INRCodec(bpppb=1.0, steps=60, device="cuda"), blocks)):
        assert not caught and 8 * len(stream) <= block.size and psnr(block, decode_block(stream)) > 30


def test_a_batch_too_large_for_the_device_is_halved(jasper_crop, monkeypatch):
    from xr_inr.core.encode import encode_blocks

    blocks = [jasper_crop[:, :20, :20], jasper_crop[:, 20:, :20], jasper_crop[:, 20:, 20:]]
    sizes = []
    training = fitting.GridTraining

    def small_device(targets, *args, **kwargs):  # a device that holds one block at a time
        sizes.append(len(targets))
        if len(targets) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return training(targets, *args, **kwargs)

    monkeypatch.setattr(fitting, "GridTraining", small_device)
    streams = encode_blocks(INRCodec(bpppb=1.0, steps=10), blocks)
    assert sizes == [3, 1, 2, 1, 1]
    for block, (stream, _) in zip(blocks, streams):
        assert decode_block(stream).shape == block.shape and 8 * len(stream) <= block.size


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_batches_on_one_gpu_train_a_few_at_a_time(device, monkeypatch):
    """The accessor's threads (one per CPU core) would put a batch each on the GPU at once (the best
    effort's brief fits too)."""
    import threading
    import time


    active, peak, lock = [0], [0], threading.Lock()

    def slow_batch(spec, targets, *args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return [b"payload"] * len(targets)

    monkeypatch.setattr(fitting, "fit_batch", slow_batch)
    monkeypatch.setattr(fitting, "stream_error", lambda *args: (False, 0.0))
    target = np.random.default_rng(0).random((4, 6, 6))
    threads = [threading.Thread(target=fitting.fit_and_pack, args=([target], [None], [400.0], [40.0]),
                                kwargs={"device": device, "search_steps": search}) for search in (0, 2, 0, 2, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= fitting.GPU_FITS if device == "cuda" else peak[0] > fitting.GPU_FITS


def test_the_packers_first_guess_of_a_doubling_saving_follows_the_rate():
    """About 1 bit per latent per doubling of the step at high rates (wide latents); at the floor, 0.05,
    where every latent rounds to 0 at either step."""
    rng = np.random.default_rng(0)
    assert 0.9 < fitting.doubling_saving(rng.laplace(scale=200.0, size=(4, 40, 40))) < 1.1
    assert 0.9 < fitting.doubling_saving(rng.laplace(scale=2.0, size=(4, 40, 40))) < 1.1
    assert fitting.doubling_saving(rng.uniform(-0.45, 0.45, size=(4, 40, 40))) == 0.05

import numpy as np
import pytest

from xr_inr import metrics


@pytest.fixture
def cube():
    rng = np.random.default_rng(0)
    return rng.uniform(10, 110, size=(5, 6, 7))


def test_psnr_matches_definition(cube):
    noise = np.full_like(cube, 2.0)
    peak = cube.max() - cube.min()
    assert metrics.psnr(cube, cube + noise) == pytest.approx(10 * np.log10(peak**2 / 4.0))


def test_psnr_exact_is_inf(cube):
    assert metrics.psnr(cube, cube.copy()) == np.inf


def test_psnr_uses_global_range_and_integer_dtypes():
    original = np.array([[[0, 1000]]], dtype=np.uint16)
    decoded = np.array([[[10, 1000]]], dtype=np.uint16)  # uint16 subtraction must not wrap
    assert metrics.psnr(original, decoded) == pytest.approx(10 * np.log10(1000**2 / 50.0))


def test_nan_elements_of_original_are_ignored(cube):
    decoded = cube + 1.0
    with_nan = cube.copy()
    with_nan[0, 0, 0] = np.nan
    decoded_far = decoded.copy()
    decoded_far[0, 0, 0] = 1e9
    assert np.isfinite(metrics.psnr(with_nan, decoded_far))
    assert metrics.max_abs_error(with_nan, decoded_far) == pytest.approx(1.0)
    assert np.isfinite(metrics.sam_deg(with_nan, decoded_far))


def test_psnr_band_mean_uses_each_band_range_and_skips_constant_bands():
    original = np.zeros((3, 2, 2))
    original[0] = [[0, 10], [0, 10]]
    original[1] = [[0, 100], [0, 100]]
    original[2] = 7.0  # constant band: undefined PSNR, left out
    decoded = original + 1.0
    expected = np.mean([10 * np.log10(10**2), 10 * np.log10(100**2)])
    assert metrics.psnr_band_mean(original, decoded) == pytest.approx(expected)


def test_sam_known_angle_and_zero_vectors():
    original = np.zeros((2, 1, 3))
    decoded = np.zeros((2, 1, 3))
    original[:, 0, 0] = [1, 0]
    decoded[:, 0, 0] = [1, 1]  # 45 degrees
    original[:, 0, 1] = [0, 0]
    decoded[:, 0, 1] = [0, 0]  # both zero: 0 degrees
    original[:, 0, 2] = [0, 0]
    decoded[:, 0, 2] = [3, 4]  # one zero: 90 degrees
    assert metrics.sam_deg(original, decoded) == pytest.approx((45 + 0 + 90) / 3)


def test_sam_is_scale_invariant(cube):
    assert metrics.sam_deg(cube, 3 * cube) == pytest.approx(0.0, abs=1e-5)


def test_band_axis_argument(cube):
    decoded = cube * 1.1
    moved = np.moveaxis(cube, 0, -1)
    moved_decoded = np.moveaxis(decoded, 0, -1)
    assert metrics.sam_deg(moved, moved_decoded, band_axis=-1) == pytest.approx(
        metrics.sam_deg(cube, decoded)
    )
    assert metrics.psnr_band_mean(moved, moved_decoded, band_axis=-1) == pytest.approx(
        metrics.psnr_band_mean(cube, decoded)
    )


def test_summary_keys_and_shape_check(cube):
    result = metrics.summary(cube, cube + 0.5)
    assert set(result) == {"psnr", "psnr_band_mean", "sam_deg", "max_abs_err"}
    assert result["max_abs_err"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        metrics.summary(cube, cube[:, :, :3])

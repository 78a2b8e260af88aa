import numpy as np
import pytest

from xr_inr import metrics
from xr_inr.tools import baselines

CODECS = sorted(baselines.BASELINES)


@pytest.fixture(scope="module")
def crop(jasper_crop):
    """A small uint16 (band, y, x) crop of Jasper Ridge (the committed fixture)."""
    return np.ascontiguousarray(jasper_crop[:, :32, 4:36])  # 40 x 32 x 32


def _min_bpppb(codec, cube):
    with pytest.raises(baselines.TargetUnreachable) as caught:
        codec.encode_at_rate(cube, 1e-4)
    assert caught.value.min_bpppb > 1e-4
    assert codec.name in str(caught.value)
    return caught.value.min_bpppb


@pytest.mark.parametrize("name", CODECS)
def test_rate_is_met_and_quality_rises_with_rate(name, crop):
    codec = baselines.BASELINES[name]
    floor = _min_bpppb(codec, crop)
    psnrs = []
    for target in (1.5 * floor, 6 * floor):
        result = codec.encode_at_rate(crop, target)
        assert result.bpppb <= target
        assert result.bpppb == 8 * len(result.data) / crop.size
        decoded = codec.decode(result.data)
        assert decoded.shape == crop.shape and decoded.dtype == crop.dtype
        np.testing.assert_array_equal(baselines.decode(result.data), decoded)
        psnrs.append(metrics.psnr(crop, decoded))
    assert psnrs[1] > psnrs[0] + 1.0, psnrs


@pytest.mark.parametrize("name", CODECS)
def test_float_and_signed_cubes_round_trip(name, shared_dataset):
    samson = np.load(shared_dataset("samson_95x95x156.npz"))["cube"][:24, :24, ::6].transpose(2, 0, 1)
    cuprite = np.load(shared_dataset("cuprite_crop_50x90x188.npz"))["cube"][:24, :24, ::6].transpose(2, 0, 1)
    for cube in (np.ascontiguousarray(samson), np.ascontiguousarray(cuprite)):
        codec = baselines.BASELINES[name]
        result = codec.encode_at_rate(cube, 3 * _min_bpppb(codec, cube))
        decoded = codec.decode(result.data)
        assert decoded.dtype == cube.dtype and decoded.shape == cube.shape
        assert metrics.psnr(cube, decoded) > 15


def test_pca_jpeg2000_on_the_notes_recipe(jasper_cube):
    """The notes' PCA + JPEG2000 number at 0.1 bpppb (42.3 dB) on the full Jasper Ridge cube."""
    codec = baselines.BASELINES["pca-jpeg2000"]
    result = codec.encode_at_rate(jasper_cube, 0.1)
    assert 0.095 < result.bpppb <= 0.1
    assert metrics.psnr(jasper_cube, codec.decode(result.data)) > 41.8


def test_nan_elements_are_filled_not_fatal(crop):
    cube = crop.astype(np.float32)
    cube[3, 5, 7] = np.nan
    codec = baselines.BASELINES["pca-dct"]
    result = codec.encode_at_rate(cube, 1.0)
    decoded = codec.decode(result.data)
    assert np.isfinite(decoded).all()
    assert metrics.psnr(cube, decoded) > 30


def test_header_is_checked(crop):
    data = baselines.BASELINES["jpeg"].encode_at_rate(crop, 4.0).data
    with pytest.raises(ValueError, match="codec id"):
        baselines.BASELINES["jpeg2000"].decode(data)
    with pytest.raises(ValueError, match="not an xr-inr"):
        baselines.decode(b"XYZ" + data[3:])


def test_rejects_non_cubes():
    with pytest.raises(ValueError):
        baselines.BASELINES["zfp"].encode_at_rate(np.zeros((4, 4)), 1.0)

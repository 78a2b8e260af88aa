"""Distortion metrics for hyperspectral cubes laid out (band, y, x).

Every metric ignores the elements where the *original* cube is NaN. Values are
computed in float64 whatever the input dtypes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["psnr", "psnr_band_mean", "sam_deg", "max_abs_error", "summary"]


def _pair(original, decoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both cubes as float64 plus the mask of elements that count (original finite)."""
    original = np.asarray(original, dtype=np.float64)
    decoded = np.asarray(decoded, dtype=np.float64)
    if original.shape != decoded.shape:
        raise ValueError(f"shape mismatch: original {original.shape}, decoded {decoded.shape}")
    valid = np.isfinite(original)
    if not valid.any():
        raise ValueError("the original cube has no finite element")
    return original, decoded, valid


def _psnr_from(peak: np.ndarray | float, mse: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(np.square(peak) / mse)


def psnr(original, decoded) -> float:
    """PSNR in dB over the whole cube, peak R = max - min of the original cube.

    Returns inf for an exact reconstruction.
    """
    original, decoded, valid = _pair(original, decoded)
    peak = original[valid].max() - original[valid].min()
    mse = np.mean(np.square(original[valid] - decoded[valid]))
    return float(_psnr_from(peak, mse))


def psnr_band_mean(original, decoded, band_axis: int = 0) -> float:
    """Mean over bands of each band's PSNR, each with its own peak (band max - band min).

    Bands that are constant in the original (peak 0, PSNR undefined) and bands
    without any finite element are left out. A band reconstructed exactly has
    an infinite PSNR, so the mean is then inf.
    """
    original, decoded, valid = _pair(original, decoded)
    original = np.moveaxis(original, band_axis, 0).reshape(original.shape[band_axis], -1)
    decoded = np.moveaxis(decoded, band_axis, 0).reshape(original.shape)
    valid = np.moveaxis(valid, band_axis, 0).reshape(original.shape)
    values = []
    for band, dec, ok in zip(original, decoded, valid):
        if not ok.any():
            continue
        peak = band[ok].max() - band[ok].min()
        if peak == 0:
            continue
        values.append(_psnr_from(peak, np.mean(np.square(band[ok] - dec[ok]))))
    if not values:
        raise ValueError("every band of the original is constant: per-band PSNR is undefined")
    return float(np.mean(values))


def sam_deg(original, decoded, band_axis: int = 0) -> float:
    """Mean spectral angle in degrees between original and decoded pixel spectra.

    Per pixel, only the bands where the original is finite enter the angle, and
    pixels with no finite band are left out. Zero vectors: the angle between two
    zero spectra is 0 deg; between a zero and a non-zero spectrum it is 90 deg
    (nothing of the spectrum's direction is kept). A NaN in the decoded cube
    makes the result NaN.
    """
    original, decoded, valid = _pair(original, decoded)
    original = np.where(valid, original, 0.0)
    decoded = np.where(valid, decoded, 0.0)
    dot = np.sum(original * decoded, axis=band_axis)
    norm_original = np.sqrt(np.sum(np.square(original), axis=band_axis))
    norm_decoded = np.sqrt(np.sum(np.square(decoded), axis=band_axis))
    norms = norm_original * norm_decoded
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.clip(dot / norms, -1.0, 1.0)
    angle = np.degrees(np.arccos(cosine))
    both_zero = (norm_original == 0) & (norm_decoded == 0)
    one_zero = (norm_original == 0) ^ (norm_decoded == 0)
    angle = np.where(both_zero, 0.0, np.where(one_zero, 90.0, angle))
    pixels = valid.any(axis=band_axis)
    return float(np.mean(angle[pixels]))


def max_abs_error(original, decoded) -> float:
    """Largest absolute difference over the elements where the original is finite."""
    original, decoded, valid = _pair(original, decoded)
    return float(np.max(np.abs(original[valid] - decoded[valid])))


def summary(original, decoded, band_axis: int = 0) -> dict[str, float]:
    """All metrics as a dict: psnr, psnr_band_mean, sam_deg, max_abs_err."""
    return {
        "psnr": psnr(original, decoded),
        "psnr_band_mean": psnr_band_mean(original, decoded, band_axis),
        "sam_deg": sam_deg(original, decoded, band_axis),
        "max_abs_err": max_abs_error(original, decoded),
    }

"""``xr-inr figures``: the pictures of the user docs, made from real data and published results.

From one cube (default: Jasper Ridge, ``jasper_ridge_100x100x198.npz``, looked for as given, then
in ``$XR_INR_DATA`` and in ``../shared/datasets`` beside the repository) it encodes and decodes
with the grid codec (``INRCodec(bpppb)``, default settings) and with PCA + JPEG2000 with one
scale for all components (the ``pca-jpeg2000-shared`` baseline) at each target rate, and draws:

* ``codecs-decoded.png``: original, decoded and absolute error, per codec and rate (false colour;
  the error maps share one colour scale); each panel's title gives its bpppb (every stored byte
  counted), PSNR (whole cube, R = max - min of the original) and mean SAM in degrees;
* ``codecs-spectra.png``: the spectra of two pixels before and after, at one rate;

and, from benchmark results (``results.json`` files of ``xr-inr bench``; default: the repository's
``docs/bench-results-v2.json``):

* ``rd-curves.png``: PSNR against bpppb, one panel per cube, one line per codec (and per file);
* ``speed-quality.png``: decode and encode time of each codec as a ratio to
  ``pca-jpeg2000-shared`` in the same cell, against its PSNR margin over it.

``figures.json`` beside them records the date, the machine, the settings and every number the
panels show. Nothing else is written (``--keep-streams DIR`` also keeps the encoded streams).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .. import metrics
from .bench import json_safe

__all__ = ["FIGURES", "REFERENCE", "add_arguments", "find_data", "main", "run"]

REPO = Path(__file__).resolve().parents[2]
DATA_ENV = "XR_INR_DATA"
DEFAULT_DATA = "jasper_ridge_100x100x198.npz"
DEFAULT_RESULTS = REPO / "docs" / "bench-results-v2.json"
DEFAULT_RATES = (0.05, 0.2)
GRID = "grid"
REFERENCE = "pca-jpeg2000-shared"
FIGURES = {
    "decoded": "codecs-decoded.png",
    "spectra": "codecs-spectra.png",
    "rd": "rd-curves.png",
    "speed": "speed-quality.png",
}
SIDECAR = "figures.json"
LABELS = {GRID: "grid (xr-inr)", "inr": "grid (xr-inr)", "inr@fast": "grid, effort 'fast'", "inr@best": "grid, effort 'best'",
          REFERENCE: "PCA + JPEG2000 (shared scale)",
          "pca-jpeg2000": "PCA + JPEG2000 (notes' recipe)", "inr-siren": "SIREN (the paper's)"}
DPI = 100
MAX_PNG_BYTES = 280_000
"""A PNG larger than this is reduced to a 256-colour palette (:func:`shrink_png`): the docs keep each under 300 KB."""


# --------------------------------------------------------------------------- data


def data_folders() -> list[Path]:
    """Where a cube named without a folder is looked for: $XR_INR_DATA, then ../shared/datasets."""
    folders = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    return folders + [REPO.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]


def find_data(name: str) -> str:
    """The path of ``name`` as given, else in :func:`data_folders`; else ``name`` (a registry scene)."""
    if Path(name).exists():
        return str(name)
    for folder in data_folders():
        if (folder / name).exists():
            return str(folder / name)
    from .datasets import REGISTRY

    if name in REGISTRY:
        return name
    looked = ", ".join(str(folder) for folder in data_folders())
    raise FileNotFoundError(f"{name}: not found as given nor in {looked} (set ${DATA_ENV})")


# --------------------------------------------------------------------------- encoding


def _encode_grid(cube: np.ndarray, rate: float, steps: int | None):
    from ..core.codec import INRCodec
    from ..core.decode import architecture, inspect

    codec = INRCodec(bpppb=rate, steps=steps)
    start = time.perf_counter()
    stream = codec.encode(cube)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = INRCodec().decode(stream)
    decode_s = time.perf_counter() - start
    info = inspect(stream)
    return stream, decoded, encode_s, decode_s, {"codec": repr(codec), "steps": codec.steps,
                                                 "architecture": architecture(info)}


def _encode_reference(cube: np.ndarray, rate: float):
    from .baselines import BASELINES

    baseline = BASELINES[REFERENCE]
    start = time.perf_counter()
    result = baseline.encode_at_rate(cube, rate)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = baseline.decode(result.data)
    decode_s = time.perf_counter() - start
    return result.data, decoded, encode_s, decode_s, dict(result.params)


def decode_stream(codec: str, stream: bytes) -> np.ndarray:
    """Decode a stream that :func:`run` kept (``--keep-streams``): ``codec`` is "grid" or the reference."""
    if codec == GRID:
        from ..core.codec import INRCodec

        return INRCodec().decode(stream)
    from .baselines import BASELINES

    return BASELINES[codec].decode(stream)


def measure(cube: np.ndarray, codec: str, rate: float, steps: int | None, log=print) -> dict:
    """Encode and decode ``cube`` with ``codec`` at ``rate``: the stream, the decoded cube and the numbers."""
    log(f"{codec} @ {rate:g} bpppb: encoding {cube.shape} ...")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if codec == GRID:
            stream, decoded, encode_s, decode_s, params = _encode_grid(cube, rate, steps)
        else:
            stream, decoded, encode_s, decode_s, params = _encode_reference(cube, rate)
    numbers = {
        "codec": codec,
        "target_bpppb": rate,
        "nbytes": len(stream),
        "bpppb": 8 * len(stream) / cube.size,
        **metrics.summary(cube, decoded),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "params": params,
        "warnings": [str(w.message) for w in caught],
    }
    log(f"{codec} @ {rate:g}: {numbers['bpppb']:.4f} bpppb, PSNR {numbers['psnr']:.2f} dB, "
        f"SAM {numbers['sam_deg']:.3f} deg, encode {encode_s:.1f} s, decode {decode_s:.3f} s")
    return {"numbers": numbers, "stream": stream, "decoded": decoded}


# --------------------------------------------------------------------------- pictures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shrink_png(data: bytes, limit: int = MAX_PNG_BYTES) -> bytes:
    """``data`` as it is when it is at most ``limit`` bytes, else quantised to a 256-colour palette (Pillow's
    median cut, no dithering), which keeps the look of these figures at about a third of the size."""
    if len(data) <= limit:
        return data
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _save(figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    Path(path).write_bytes(shrink_png(buffer.getvalue()))


def _false_colour(cube: np.ndarray, bands, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(y, x, 3) floats in [0, 1]: three bands, each stretched between the original's percentiles."""
    values = np.moveaxis(cube[list(bands)].astype(np.float64), 0, -1)
    return np.nan_to_num(np.clip((values - low) / np.where(high > low, high - low, 1.0), 0, 1))


def error_map(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Per pixel, the mean over bands of |decoded - original| (data units; NaN originals left out)."""
    original = original.astype(np.float64)
    error = np.abs(decoded.astype(np.float64) - original)
    error[~np.isfinite(original)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        return np.nanmean(error, axis=0)


def _numbers_line(n: dict) -> str:
    return f"{n['bpppb']:.4f} bpppb, {n['psnr']:.2f} dB, SAM {n['sam_deg']:.2f}°"


def plot_decoded(cube: np.ndarray, runs: dict, rates, bands, name: str, path: Path) -> dict:
    """Original | grid decoded | grid error | reference decoded | reference error, one row per rate."""
    plt = _pyplot()
    low, high = np.nanpercentile(cube[list(bands)].astype(np.float64), (2, 98), axis=(1, 2))
    maps = {key: error_map(cube, run["decoded"]) for key, run in runs.items()}
    finite = np.concatenate([m[np.isfinite(m)] for m in maps.values()])
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    columns = 5
    figure, axes = plt.subplots(len(rates), columns, figsize=(2.7 * columns + 0.9, 2.95 * len(rates) + 0.9),
                                squeeze=False)
    image = None
    for row, rate in zip(axes, rates):
        row[0].imshow(_false_colour(cube, bands, low, high), interpolation="nearest")
        row[0].set_title(f"original\n{cube.shape[0]} bands, {cube.dtype}", fontsize=8.5)
        for offset, codec in ((1, GRID), (3, REFERENCE)):
            run = runs[(codec, rate)]
            numbers = _numbers_line(run["numbers"])
            label = LABELS[codec]
            row[offset].imshow(_false_colour(run["decoded"], bands, low, high), interpolation="nearest")
            row[offset].set_title(f"{label}, target {rate:g}\n{numbers}", fontsize=8.5)
            image = row[offset + 1].imshow(maps[(codec, rate)], cmap="magma", vmin=0, vmax=vmax,
                                           interpolation="nearest")
            row[offset + 1].set_title(f"|error|, {label}\n{numbers}", fontsize=8.5)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(
        f"{name}: false colour, bands {bands[0]}, {bands[1]}, {bands[2]} (each stretched between the original's "
        "2nd and 98th percentiles)\nbpppb counts every stored byte; PSNR over the whole cube, R = max − min of the "
        "original; SAM = mean spectral angle; |error| = mean over bands of |decoded − original|, one colour scale",
        fontsize=9)
    figure.tight_layout(rect=(0, 0, 0.93, 1))
    bar = figure.add_axes((0.94, 0.15, 0.012, 0.65))
    figure.colorbar(image, cax=bar, extend="max").set_label("mean |error| over bands (data units)", fontsize=8)
    _save(figure, path)
    plt.close(figure)
    return {"bands": list(bands), "stretch_low": low.tolist(), "stretch_high": high.tolist(),
            "error_vmax": vmax, "error_vmax_rule": "99.5th percentile of all error maps' pixels",
            "error_max": {f"{codec}@{rate:g}": float(np.nanmax(m)) for (codec, rate), m in maps.items()}}


def pick_pixels(cube: np.ndarray, runs: dict, rate: float) -> list[dict]:
    """Two pixels: the median and the 99th percentile of the two codecs' mean per-pixel RMS error."""
    errors = []
    for codec in (GRID, REFERENCE):
        difference = runs[(codec, rate)]["decoded"].astype(np.float64) - cube.astype(np.float64)
        errors.append(np.sqrt(np.nanmean(np.square(difference), axis=0)))
    score = np.mean(errors, axis=0)
    flat = np.where(np.isfinite(score), score, np.nan).ravel()
    order = np.argsort(np.nan_to_num(flat, nan=-np.inf))
    order = order[np.isfinite(flat[order])]
    chosen = []
    for quantile, why in ((0.5, "median"), (0.99, "99th percentile")):
        index = int(order[min(len(order) - 1, int(round(quantile * (len(order) - 1))))])
        y, x = np.unravel_index(index, score.shape)
        chosen.append({"y": int(y), "x": int(x), "rule": f"{why} of the codecs' mean per-pixel RMS error",
                       "rms_error": float(score[y, x])})
    return chosen


def _pixel_sam(a: np.ndarray, b: np.ndarray) -> float:
    return metrics.sam_deg(a[:, None, None], b[:, None, None])


def plot_spectra(cube: np.ndarray, runs: dict, rate: float, pixels: list[dict], bands, band_values, band_label: str,
                 name: str, path: Path) -> list[dict]:
    """Spectra of the chosen pixels (original and both codecs) and their errors, and where the pixels are."""
    plt = _pyplot()
    figure, axes = plt.subplots(2, len(pixels) + 1, figsize=(4.2 * len(pixels) + 3.2, 5.8),
                                gridspec_kw={"height_ratios": (2.2, 1), "width_ratios": [1] * len(pixels) + [0.75]})
    low, high = np.nanpercentile(cube[list(bands)].astype(np.float64), (2, 98), axis=(1, 2))
    shown = []
    styles = {GRID: dict(color="C0", lw=1.2), REFERENCE: dict(color="C1", lw=1.2, ls="--")}
    for column, pixel in enumerate(pixels):
        y, x = pixel["y"], pixel["x"]
        original = cube[:, y, x].astype(np.float64)
        top, bottom = axes[0, column], axes[1, column]
        top.plot(band_values, original, color="black", lw=2.2, alpha=0.45, label="original")
        record = dict(pixel)
        for codec in (GRID, REFERENCE):
            run = runs[(codec, rate)]
            spectrum = run["decoded"][:, y, x].astype(np.float64)
            sam = _pixel_sam(original, spectrum)
            rmse = float(np.sqrt(np.mean(np.square(spectrum - original))))
            label = f"{LABELS[codec]}: SAM {sam:.2f}°, RMSE {rmse:.1f}"
            top.plot(band_values, spectrum, label=label, **styles[codec])
            bottom.plot(band_values, spectrum - original, **styles[codec])
            record[codec] = {"sam_deg": sam, "rmse": rmse, "bpppb": run["numbers"]["bpppb"]}
        shown.append(record)
        top.set_title(f"pixel (y={y}, x={x}): {pixel['rule'].split(' of')[0]} error", fontsize=9)
        top.legend(fontsize=7.5)
        top.set_ylabel("value (data units)")
        bottom.axhline(0, color="black", lw=0.6)
        bottom.set_ylabel("decoded − original")
        bottom.set_xlabel(band_label)
        for axis in (top, bottom):
            axis.grid(alpha=0.3)
    where = axes[0, -1]
    where.imshow(_false_colour(cube, bands, low, high), interpolation="nearest")
    for number, pixel in enumerate(pixels, 1):
        where.plot(pixel["x"], pixel["y"], marker="s", ms=9, mfc="none", mec="white", mew=1.5)
        where.annotate(str(number), (pixel["x"], pixel["y"]), xytext=(6, -6), textcoords="offset points",
                       color="white", fontsize=9, weight="bold")
    where.set_title("where (original, false colour)", fontsize=9)
    where.set_xticks([])
    where.set_yticks([])
    axes[1, -1].axis("off")
    bpppb = {codec: runs[(codec, rate)]["numbers"]["bpppb"] for codec in (GRID, REFERENCE)}
    figure.suptitle(f"{name} at target {rate:g} bpppb (grid {bpppb[GRID]:.4f}, PCA + JPEG2000 {bpppb[REFERENCE]:.4f} "
                    "bpppb, every byte counted): spectra before and after", fontsize=9.5)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return shown


def load_results(paths: list[Path]) -> list[dict]:
    """Each ``results.json`` as {"path", "label", "created", "runs"} (the runs with status ok)."""
    loaded = []
    for path in paths:
        document = json.loads(Path(path).read_text())
        runs = [r for r in document["runs"] if r["status"] == "ok" and _finite(r.get("psnr"))]
        loaded.append({"path": str(path), "label": Path(path).stem, "created": document.get("created"), "runs": runs})
    return loaded


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _colour(codec: str, order: list[str]) -> str:
    fixed = {"inr": "C0", GRID: "C0", REFERENCE: "C1", "pca-jpeg2000": "C2", "inr-siren": "C3"}
    if codec in fixed:
        return fixed[codec]
    return f"C{4 + order.index(codec) % 6}"


def _codec_label(codec: str) -> str:
    return LABELS.get(codec, codec)


def plot_rd(results: list[dict], measured: list[dict], path: Path) -> dict:
    """PSNR against bpppb, a panel per cube, a line per codec and results file; this run's points on top."""
    plt = _pyplot()
    import matplotlib.ticker

    datasets = list(dict.fromkeys(r["dataset"] for document in results for r in document["runs"]))
    datasets += [m["dataset"] for m in measured if m["dataset"] not in datasets][:1]
    codecs = list(dict.fromkeys(r["codec"] for document in results for r in document["runs"]))
    columns = min(4, max(1, len(datasets)))
    rows = max(1, math.ceil(len(datasets) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.1 * rows + 0.8), squeeze=False)
    styles = ("-", "--", ":", "-.")
    drawn = []
    for axis, dataset in zip(axes.flat, datasets):
        rates = set()
        for number, document in enumerate(results):
            runs = [r for r in document["runs"] if r["dataset"] == dataset]
            for codec in dict.fromkeys(r["codec"] for r in runs):
                points = sorted((r["bpppb"], r["psnr"]) for r in runs if r["codec"] == codec)
                rates.update(r["target_bpppb"] for r in runs if r["codec"] == codec)
                label = _codec_label(codec) + (f" [{document['label']}]" if len(results) > 1 else "")
                axis.plot(*zip(*points), marker="o", ms=4, ls=styles[number % len(styles)],
                          color=_colour(codec, codecs), label=label)
                drawn.append({"file": document["label"], "dataset": dataset, "codec": codec,
                              "points": [list(p) for p in points]})
        for m in (m for m in measured if m["dataset"] == dataset):
            axis.plot(m["bpppb"], m["psnr"], marker="*", ms=11, ls="none", mec="black", mew=0.6,
                      color=_colour("inr" if m["codec"] == GRID else m["codec"], codecs),
                      label=f"{_codec_label(m['codec'])} [this run]")
            rates.add(m["target_bpppb"])
        axis.set_xscale("log")
        axis.set_xticks(sorted(rates))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.minorticks_off()
        axis.set_title(dataset, fontsize=9)
        axis.set_xlabel("bpppb (every byte counted)", fontsize=8)
        axis.set_ylabel("PSNR (dB)", fontsize=8)
        axis.tick_params(labelsize=7.5)
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(datasets):]:
        axis.set_visible(False)
    handles = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
                  frameon=False)
    sources = "; ".join(f"{d['label']} ({(d['created'] or '?')[:10]})" for d in results)
    figure.suptitle(f"PSNR (whole cube, R = max − min of the original) against rate; from {sources}", fontsize=9)
    legend_rows = math.ceil(len(handles) / 4)
    figure.tight_layout(rect=(0, 0.04 * legend_rows + 0.02, 1, 1))
    _save(figure, path)
    plt.close(figure)
    return {"files": [{"path": d["path"], "created": d["created"], "runs": len(d["runs"])} for d in results],
            "lines": drawn}


def speed_points(results: list[dict], reference: str = REFERENCE) -> list[dict]:
    """For every cell (file, dataset, target) where ``reference`` ran, each other codec's time ratios and margin."""
    points = []
    for document in results:
        cells = {}
        for r in document["runs"]:
            cells.setdefault((r["dataset"], r["target_bpppb"]), {})[r["codec"]] = r
        for (dataset, target), by_codec in cells.items():
            base = by_codec.get(reference)
            if base is None:
                continue
            for codec, r in by_codec.items():
                if codec == reference or not all(_finite(v) and v > 0 for v in
                                                  (r["decode_s"], r["encode_s"], base["decode_s"], base["encode_s"])):
                    continue
                points.append({"file": document["label"], "dataset": dataset, "target_bpppb": target, "codec": codec,
                               "psnr_margin_db": r["psnr"] - base["psnr"],
                               "decode_ratio": r["decode_s"] / base["decode_s"],
                               "encode_ratio": r["encode_s"] / base["encode_s"],
                               "decode_s": r["decode_s"], "encode_s": r["encode_s"],
                               "reference_decode_s": base["decode_s"], "reference_encode_s": base["encode_s"]})
    return points


def plot_speed(results: list[dict], path: Path, reference: str = REFERENCE) -> list[dict]:
    """Decode and encode time as ratios to ``reference`` (log scale) against the PSNR margin over it."""
    plt = _pyplot()
    points = speed_points(results, reference)
    codecs = list(dict.fromkeys(p["codec"] for p in points))
    targets = sorted({p["target_bpppb"] for p in points})
    markers = dict(zip(targets, "osD^vP*X"))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for axis, key, what in ((axes[0], "decode_ratio", "decode"), (axes[1], "encode_ratio", "encode")):
        for codec in codecs:
            for target in targets:
                chosen = [p for p in points if p["codec"] == codec and p["target_bpppb"] == target]
                if chosen:
                    axis.scatter([p["psnr_margin_db"] for p in chosen], [p[key] for p in chosen],
                                 color=_colour(codec, codecs), marker=markers[target], s=34, alpha=0.85,
                                 label=f"{_codec_label(codec)}, target {target:g}")
        axis.set_yscale("log")
        axis.axhline(1, color="black", lw=0.7)
        axis.axvline(0, color="black", lw=0.7)
        axis.set_xlabel(f"PSNR margin over {reference} (dB, same cube and target)", fontsize=8.5)
        axis.set_ylabel(f"{what} time / {reference}'s", fontsize=8.5)
        axis.set_title(f"{what} time against quality", fontsize=9.5)
        axis.grid(True, which="both", alpha=0.25)
        axis.tick_params(labelsize=8)
    axes[0].legend(fontsize=7.5)
    sources = "; ".join(f"{d['label']} ({(d['created'] or '?')[:10]})" for d in results)
    figure.suptitle(f"One point per cube and target rate; right of 0 dB: better than {reference}, above 1: "
                    f"slower. From {sources}", fontsize=9)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return points


# --------------------------------------------------------------------------- the command


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("xr-inr", "numpy", "torch", "imagecodecs", "matplotlib", "constriction"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _commit() -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates {text!r}: give bpppb values, e.g. 0.05,0.2")
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates {text!r}: give positive bpppb values")
    return rates


def _bands(text: str) -> tuple[int, int, int]:
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        bands = ()
    if len(bands) != 3:
        raise argparse.ArgumentTypeError(f"bands {text!r}: give three band indices, R,G,B")
    return bands


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"the cube (.npz, .mat, ENVI .hdr, GeoTIFF or a registry scene); a bare file name is "
                             f"also looked for in ${DATA_ENV} and ../shared/datasets (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNGs and figures.json "
                                                                            "(default docs/img)")
    parser.add_argument("--bpppb", type=_rates, default=list(DEFAULT_RATES),
                        help="target rates, comma-separated (default 0.05,0.2)")
    parser.add_argument("--spectrum-rate", type=float, help="the rate of the spectra figure (default: the first)")
    parser.add_argument("--results", action="append", type=Path, default=[], metavar="RESULTS.json",
                        help="an `xr-inr bench` results.json for the rate-distortion and speed figures; "
                             "repeatable (default: docs/bench-results-v2.json of the repository)")
    parser.add_argument("--bands", type=_bands, help="R,G,B band indices of the false-colour images "
                                                     "(default: at 3/4, 1/2 and 1/4 of the bands)")
    parser.add_argument("--steps", type=int, help="grid fitting steps, FOR TESTS ONLY (default: the codec's, 1000); "
                                                  "published figures use the default")
    parser.add_argument("--note", help="a line about the machine recorded in figures.json (e.g. '2 CPU cores, shared')")
    parser.add_argument("--keep-streams", type=Path, metavar="DIR",
                        help="also write the encoded streams there (CODEC_RATE.bin), e.g. to check the numbers")


def run(args: argparse.Namespace, log=None) -> dict:
    """Encode, decode, draw the four figures and write figures.json; returns what figures.json holds."""
    from ..commands import default_bands
    from .datasets import load

    log = log or (lambda line: print(line, file=sys.stderr))
    started = datetime.datetime.now(datetime.timezone.utc)
    source = find_data(args.data)
    da = load(source)
    cube = np.ascontiguousarray(da.transpose("band", ...).values)
    name = str(da.attrs.get("name", Path(source).stem))
    rates = list(args.bpppb)
    spectrum_rate = args.spectrum_rate if args.spectrum_rate is not None else rates[0]
    if spectrum_rate not in rates:
        raise ValueError(f"--spectrum-rate {spectrum_rate:g} is not one of the rates {rates}")
    bands = tuple(args.bands) if args.bands else default_bands(cube.shape[0])
    if not all(0 <= b < cube.shape[0] for b in bands):
        raise ValueError(f"bands must be three indices in 0..{cube.shape[0] - 1}, got {bands}")
    units = da["band"].attrs.get("units")
    band_values = np.asarray(da["band"].values, dtype=np.float64)
    band_label = f"wavelength ({units})" if units else "band"
    results_paths = args.results or ([DEFAULT_RESULTS] if DEFAULT_RESULTS.exists() else [])

    runs = {}
    for rate in rates:
        for codec in (GRID, REFERENCE):
            runs[(codec, rate)] = measure(cube, codec, rate, args.steps, log)
    if args.keep_streams:
        args.keep_streams.mkdir(parents=True, exist_ok=True)
        for (codec, rate), run_ in runs.items():
            (args.keep_streams / f"{codec}_{rate:g}.bin").write_bytes(run_["stream"])

    args.out.mkdir(parents=True, exist_ok=True)
    paths = {key: args.out / filename for key, filename in FIGURES.items()}
    decoded_info = plot_decoded(cube, runs, rates, bands, f"{name} {cube.shape} (band, y, x)", paths["decoded"])
    pixels = pick_pixels(cube, runs, spectrum_rate)
    spectra = plot_spectra(cube, runs, spectrum_rate, pixels, bands, band_values, band_label, name, paths["spectra"])
    measured = [{**run_["numbers"], "dataset": name} for run_ in runs.values()]
    results = load_results(results_paths)
    drawn = {}
    if results:
        drawn["rd"] = plot_rd(results, measured, paths["rd"])
        drawn["speed"] = plot_speed(results, paths["speed"])
    else:
        log("no results file: rd-curves.png and speed-quality.png not drawn")
        paths = {key: path for key, path in paths.items() if key in ("decoded", "spectra")}

    sidecar = {
        "schema_version": 1,
        "created": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "note": args.note,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "versions": _versions(),
            "commit": _commit(),
        },
        "settings": {
            "command": shlex.join(["xr-inr", "figures", *getattr(args, "argv", [])]),
            "data": source,
            "dataset": name,
            "shape": list(cube.shape),
            "dtype": str(cube.dtype),
            "rates": rates,
            "spectrum_rate": spectrum_rate,
            "grid_steps": args.steps,
            "grid_codec": "INRCodec(bpppb=rate" + (f", steps={args.steps})" if args.steps else ") (defaults)"),
            "reference": REFERENCE,
            "results": [str(p) for p in results_paths],
            "timing": "one encode and one decode in this process, wall clock (not the benchmark's isolated workers)",
            "metrics": "PSNR over the whole cube with R = max - min of the original; sam_deg = mean spectral angle "
                       "in degrees; bpppb = 8 x stream bytes / (bands x height x width), every stored byte counted",
        },
        "panels": [{"figure": FIGURES["decoded"], **run_["numbers"]} for run_ in runs.values()],
        "decoded_figure": decoded_info,
        "spectra": {"figure": FIGURES["spectra"], "rate": spectrum_rate, "pixels": spectra},
        "rd": {"figure": FIGURES["rd"], **drawn["rd"]} if "rd" in drawn else None,
        "speed": {"figure": FIGURES["speed"], "reference": REFERENCE, "points": drawn["speed"]} if "speed" in drawn
        else None,
        "files": {path.name: path.stat().st_size for path in paths.values()},
    }
    (args.out / SIDECAR).write_text(json.dumps(json_safe(sidecar), indent=1, allow_nan=False) + "\n")
    for path in paths.values():
        log(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    log(f"wrote {args.out / SIDECAR}")
    return sidecar


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="xr-inr figures", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run(args)

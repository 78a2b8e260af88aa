"""The runnable scripts of examples/, each run once on the crop GeoTIFF or its store (conftest.py), tiny fits."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import xr_inr

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def test_geotiff_to_zarr(crop_geotiff, tmp_path, capsys):
    run_example("geotiff_to_zarr", [str(crop_geotiff[0]), str(tmp_path / "g.zarr"), "--bpppb", "1", "--steps", "30",
                                    "--chunk", "24"])
    out = capsys.readouterr().out
    assert "uint16, CRS EPSG:32610" in out and "chunks decoded on opening: 0" in out
    assert "an 8 x 8 corner (10, 8, 8): 1 of 4 chunks decoded" in out
    np.testing.assert_allclose(xr_inr.open_zarr(tmp_path / "g.zarr")["cube"]["band"].values, crop_geotiff[1])


def test_compress_distributed(crop_geotiff, tmp_path, capsys):
    pytest.importorskip("distributed")
    run_example("compress_distributed", [str(crop_geotiff[0]), str(tmp_path / "d.zarr"), "--workers", "1",
                                         "--bpppb", "1", "--steps", "30"])
    assert "1 chunks fitted on 1 workers" in capsys.readouterr().out
    assert xr_inr.open_zarr(tmp_path / "d.zarr")["cube"].dtype == np.uint16


def test_previews(crop_store, tmp_path, capsys):
    run_example("previews", [str(crop_store), str(tmp_path / "p"), "--scales", "0.25,2"])
    out = capsys.readouterr().out
    assert "scale 0.25: 10 x 10 pixels, 1000 values evaluated" in out  # 10 bands x 10 x 10
    assert "scale 2: 80 x 80 pixels, 64000 values evaluated" in out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["preview_0.25.png", "preview_2.png"]


def test_compare_codecs(crop_geotiff, tmp_path, capsys):
    pytest.importorskip("imagecodecs")
    # two classical codecs keep this short (each run is a spawned process); bench's INR runs: test_bench.py
    run_example("compare_codecs", [str(crop_geotiff[0]), "--bpppb", "1", "--codecs", "pca-dct,jpeg2000",
                                   "--out", str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert "| pca-dct |" in out and "| jpeg2000 |" in out
    assert (tmp_path / "res" / "results.json").exists()


def test_quality_target(tmp_path, capsys):
    run_example("quality_target", ["--psnr", "35", "--steps", "30", "--crop", "20",
                                   "--store", str(tmp_path / "q.zarr")])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  chunk (")]
    assert len(lines) == 1 and float(lines[0].split(": ")[1].split(" dB")[0]) >= 35
    assert "cube PSNR" in out and "PSNR target 35 dB, per chunk" in out


def test_ablation_grid(capsys):
    fixture = Path(__file__).resolve().parent / "fixtures" / "jasper_ridge_crop_40x40x40.npz"
    run_example("ablation_grid", ["--data", str(fixture), "--bpppb", "0.5", "--steps", "6",
                                  "--only", "PCA basis and mean frozen"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| PCA basis")]
    assert len(rows) == 1 and 0.4 < float(rows[0].split("|")[2]) <= 0.5  # within budget

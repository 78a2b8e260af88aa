"""``xr-inr figures`` on the committed Jasper Ridge crop, with a few fitting steps (the published figures use
the codec's defaults): the PNGs and figures.json are written, and every number figures.json shows is the
project's metric of the streams it kept."""

import json
from pathlib import Path

import numpy as np
import pytest

from xr_inr import cli, metrics
from xr_inr.tools import figures

pytest.importorskip("matplotlib")
pytest.importorskip("imagecodecs")

REPO = Path(__file__).resolve().parent.parent
CROP = REPO / "tests" / "fixtures" / "jasper_ridge_crop_40x40x40.npz"
RESULTS = REPO / "docs" / "bench-results-v2.json"


def test_figures_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["figures", "--help"])
    assert exit_.value.code == 0 and "usage: xr-inr figures" in capsys.readouterr().out


def test_figures_on_the_crop(tmp_path):
    pytest.importorskip("torch")
    out, streams = tmp_path / "img", tmp_path / "streams"
    argv = ["figures", "--data", str(CROP), "--out", str(out), "--steps", "5", "--keep-streams", str(streams),
            "--results", str(RESULTS), "--note", "test"]
    assert cli.main(argv) == 0

    for name in figures.FIGURES.values():
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 300_000, name
    sidecar = json.loads((out / figures.SIDECAR).read_text())
    assert sidecar["settings"]["grid_steps"] == 5 and sidecar["settings"]["rates"] == [0.05, 0.2]
    assert sidecar["machine"]["note"] == "test" and sidecar["machine"]["cpu_count"] >= 1
    assert sidecar["settings"]["command"].startswith("xr-inr figures --data")

    cube = np.load(CROP)["cube"].transpose(2, 0, 1)
    decoded = {}
    assert {(p["codec"], p["target_bpppb"]) for p in sidecar["panels"]} == {
        (codec, rate) for codec in (figures.GRID, figures.REFERENCE) for rate in (0.05, 0.2)}
    for panel in sidecar["panels"]:
        stream = (streams / f"{panel['codec']}_{panel['target_bpppb']:g}.bin").read_bytes()
        restored = figures.decode_stream(panel["codec"], stream)
        decoded[panel["codec"], panel["target_bpppb"]] = restored
        assert panel["nbytes"] == len(stream) and panel["bpppb"] == 8 * len(stream) / cube.size
        assert panel["psnr"] == metrics.psnr(cube, restored)
        assert panel["sam_deg"] == metrics.sam_deg(cube, restored)
        assert panel["max_abs_err"] == metrics.max_abs_error(cube, restored)

    spectra = sidecar["spectra"]
    assert spectra["rate"] == 0.05 and len(spectra["pixels"]) == 2
    for pixel in spectra["pixels"]:
        original = cube[:, pixel["y"], pixel["x"]][:, None, None]
        for codec in (figures.GRID, figures.REFERENCE):
            spectrum = decoded[codec, 0.05][:, pixel["y"], pixel["x"]][:, None, None]
            assert pixel[codec]["sam_deg"] == pytest.approx(metrics.sam_deg(original, spectrum), abs=1e-9)

    # the speed figure's ratios are those of the published results
    runs = json.loads(RESULTS.read_text())["runs"]
    cell = {r["codec"]: r for r in runs if r["dataset"] == "jasper_ridge_100x100x198" and r["target_bpppb"] == 0.1}
    point = next(p for p in sidecar["speed"]["points"]
                 if p["codec"] == "inr" and p["dataset"] == "jasper_ridge_100x100x198" and p["target_bpppb"] == 0.1)
    assert point["decode_ratio"] == pytest.approx(cell["inr"]["decode_s"] / cell[figures.REFERENCE]["decode_s"])
    assert point["psnr_margin_db"] == pytest.approx(cell["inr"]["psnr"] - cell[figures.REFERENCE]["psnr"])


def test_a_bare_file_name_is_looked_for_in_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "cube.npz").write_bytes(CROP.read_bytes())
    monkeypatch.setenv(figures.DATA_ENV, str(tmp_path))
    monkeypatch.chdir(REPO)
    assert figures.find_data("cube.npz") == str(tmp_path / "cube.npz")
    with pytest.raises(FileNotFoundError, match=figures.DATA_ENV):
        figures.find_data("no-such-cube.npz")

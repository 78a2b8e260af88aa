"""The ``xr-inr`` commands (compress, decode, info, preview, stac) and the STAC Item, on the committed
Jasper Ridge crop written as a GeoTIFF with rioxarray. Fits are tiny (30 steps): these tests check
what each command writes and reports, not quality."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import xr_inr
from xr_inr import cli
from xr_inr.core.decode import decode_counter
from xr_inr.xarray_zarr.sources import StoredCube

rioxarray = pytest.importorskip("rioxarray")

REPO = Path(__file__).resolve().parent.parent
FIT = ["--bpppb", "1", "--steps", "30", "--quiet"]


def _cube(path):
    ds = xr_inr.open_zarr(path)
    return ds[next(iter(ds.data_vars))]


def test_every_command_has_help_and_the_module_runs(capsys):
    for command in ("compress", "decode", "info", "preview", "stac", "verify", "upgrade"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0 and f"usage: xr-inr {command}" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "xr_inr.cli", "info", "no-such.zarr"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 1 and "xr-inr info: error:" in result.stderr and "Traceback" not in result.stderr


def test_compress_keeps_georeference_wavelengths_and_dtype(crop_geotiff, crop_store):
    source = rioxarray.open_rasterio(crop_geotiff[0])
    cube = _cube(crop_store)
    assert cube.dtype == np.uint16 and cube.shape == (10, 40, 40)
    assert cube.rio.crs.to_epsg() == 32610 and cube.rio.transform() == source.rio.transform()
    np.testing.assert_allclose(cube["band"].values, crop_geotiff[1])
    assert cube.inr.chunk_shape == (10, 24, 24) and 0 < cube.inr.bpppb <= 1


def test_compress_uses_the_workers_asked_for_and_shows_progress(crop_geotiff, tmp_path, monkeypatch, capsys):
    import dask

    from xr_inr.xarray_zarr import parallel

    seen = []
    original = parallel.run

    def spy(*args, **kwargs):
        seen.append(dask.config.get("num_workers", None))
        return original(*args, **kwargs)

    monkeypatch.setattr(parallel, "run", spy)
    out = tmp_path / "one.zarr"
    assert cli.main(["compress", str(crop_geotiff[0]), str(out), "--chunks", "y=-1,x=-1", "--workers", "1",
                     "--bpppb", "1", "--effort", "fast"]) == 0
    assert seen == [1]
    stored = zarr.open_group(out, mode="r")["cube"].metadata.codecs[0].to_dict()["configuration"]
    assert stored["effort"] == "fast" and stored["steps"] == 100
    captured = capsys.readouterr()
    assert "xr-inr fit (1 chunks)" in captured.err and "1/1" in captured.err
    assert f"{out}: cube" in captured.out and "bpppb" in captured.out


def test_compress_on_a_running_cluster(crop_geotiff, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None, silence_logs=40) as cluster:
        with distributed.Client(cluster) as client, distributed.get_task_stream(client) as tasks:
            out = tmp_path / "cluster.zarr"
            assert cli.main(["compress", str(crop_geotiff[0]), str(out), "--chunks", "40", "--scheduler",
                             cluster.scheduler_address, *FIT]) == 0
    assert any(str(t["key"]).startswith("xr-inr-fit-") for t in tasks.data)
    assert _cube(out).inr.nbytes > 0


def test_bad_input_fails_with_a_message(crop_geotiff, crop_store, tmp_path, capsys):
    assert cli.main(["compress", str(tmp_path / "missing.tif"), str(tmp_path / "x.zarr")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["compress", str(crop_geotiff[0]), str(crop_store), *FIT]) == 1  # exists, no --overwrite
    assert "exists (overwrite with --overwrite)" in capsys.readouterr().err
    assert cli.main(["decode", str(crop_store), str(tmp_path / "out.jpg")]) == 1
    assert "the suffix picks the format" in capsys.readouterr().err
    assert cli.main(["preview", str(crop_store), str(tmp_path / "p.png"), "--bands", "0,1,99"]) == 1
    assert "three band indices in 0..9" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compress", str(crop_geotiff[0]), str(tmp_path / "y.zarr"), "--chunks", "big"])
    assert exit_.value.code == 2 and "give a size" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".tif", ".nc", ".zarr"])
def test_decode_keeps_dtype_georeference_and_wavelengths(crop_store, crop_geotiff, tmp_path, suffix):
    out = tmp_path / f"decoded{suffix}"
    assert cli.main(["decode", str(crop_store), str(out)]) == 0
    expected = _cube(crop_store)
    if suffix == ".tif":
        from xr_inr.tools.datasets import load

        back = load(out)  # reads the per-band wavelength metadata back
        assert back["band"].attrs["units"] == "nm"
    elif suffix == ".nc":
        back = xr.open_dataset(out, decode_coords="all", mask_and_scale=False)["cube"]
    else:
        back = xr.open_zarr(out, decode_coords="all", mask_and_scale=False)["cube"]
        assert zarr.open_array(out / "cube", mode="r").metadata.to_dict()["codecs"][0]["name"] != "xr_inr"
    assert back.dtype == np.uint16 and back.rio.nodata == 0  # the GeoTIFF's nodata
    assert back.rio.crs.to_epsg() == 32610 and back.rio.transform() == expected.rio.transform()
    np.testing.assert_allclose(back["band"].values, crop_geotiff[1])
    np.testing.assert_array_equal(back.values, expected.values)


def test_open_cube_reads_every_input_format(crop_store, crop_geotiff, tmp_path):
    from xr_inr.commands import decode, open_cube

    decode(crop_store, tmp_path / "c.nc")
    npz = REPO / "tests/fixtures/jasper_ridge_crop_40x40x40.npz"
    for path in (crop_geotiff[0], crop_store, tmp_path / "c.nc", npz):
        cube = open_cube(path)
        assert cube.ndim == 3 and cube.dtype == np.uint16 and cube.inr.band_dim == "band"
    with pytest.raises(ValueError, match="unknown format"):
        open_cube(REPO / "README.md")


READ_ONLY = """
import sys
from xr_inr import cli
store, folder = sys.argv[1:]
for argv in (["info", store], ["preview", store, folder + "/p.png"], ["decode", store, folder + "/d.tif"],
             ["stac", store, "--out", folder + "/i.json"], ["verify", store, "--decode"]):
    assert cli.main(argv) == 0, argv
print("torch imported:", "torch" in sys.modules)
"""


def test_commands_that_read_a_store_never_import_torch(crop_store, tmp_path):
    result = subprocess.run([sys.executable, "-c", READ_ONLY, str(crop_store), str(tmp_path)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout


def test_info_reports_what_is_stored(crop_store, capsys):
    assert cli.main(["info", str(crop_store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    every_file = sum(p.stat().st_size for p in crop_store.rglob("*") if p.is_file())
    stored = StoredCube(zarr.open_group(crop_store, mode="r")["cube"])
    assert report["store_bytes"] == every_file and report["bpppb"] == pytest.approx(8 * every_file / (10 * 40 * 40))
    cube = report["cubes"]["cube"]
    assert cube["dims"] == ["band", "y", "x"] and cube["shape"] == [10, 40, 40] and cube["dtype"] == "uint16"
    assert cube["chunks"] == 4 and cube["chunk_bytes"] == stored.nbytes < every_file
    assert cube["methods"] == {"grid": 4} and sum(cube["architectures"].values()) == 4
    assert cli.main(["info", str(crop_store)]) == 0
    text = capsys.readouterr().out
    assert f"{every_file} bytes stored" in text and "methods: grid x 4" in text and "latent grids" in text


def test_preview_evaluates_the_preview_grid_only(crop_store, tmp_path, capsys):
    from PIL import Image

    decode_counter.reset()
    assert cli.main(["preview", str(crop_store), str(tmp_path / "p.png"), "--bands", "7,4,1", "--scale", "0.5"]) == 0
    assert "(20 x 20 pixels)" in capsys.readouterr().out
    assert decode_counter.blocks == 4 and decode_counter.values == 10 * 20 * 20  # never the 40 x 40 grid
    image = np.asarray(Image.open(tmp_path / "p.png"))
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8
    assert (image.max(axis=(0, 1)) == 255).all() and (image.min(axis=(0, 1)) == 0).all()  # stretched
    cli.main(["preview", str(crop_store), str(tmp_path / "small.png"), "--scale", "0.25"])
    assert np.asarray(Image.open(tmp_path / "small.png")).shape == (10, 10, 3)


def test_stac_item_validates_offline_and_describes_the_store(crop_store, crop_geotiff, tmp_path):
    import pystac
    from pyproj import Transformer

    from xr_inr.stac import validate

    out = tmp_path / "item.json"
    assert cli.main(["stac", str(crop_store), "--out", str(out), "--datetime", "2024-06-01T10:30:00Z"]) == 0
    item = pystac.Item.from_dict(json.loads(out.read_text()))
    checked = validate(item)
    assert any("item-spec" in uri for uri in checked) and any("datacube" in uri for uri in checked)
    assert any("projection" in uri for uri in checked)
    asset = item.assets["data"]
    assert asset.href == str(crop_store.resolve()) and asset.roles == ["data"]
    assert asset.media_type == "application/vnd.zarr; version=3"
    props = item.properties
    assert props["datetime"] == "2024-06-01T10:30:00Z"
    assert props["proj:code"] == "EPSG:32610" and props["proj:shape"] == [40, 40]
    assert props["proj:transform"] == [30.0, 0.0, 500_000.0, 0.0, -30.0, 4_200_000.0]
    np.testing.assert_allclose(props["cube:dimensions"]["band"]["values"], crop_geotiff[1])
    assert props["cube:dimensions"]["x"]["extent"] == [500_000.0, 501_200.0]
    centre = Transformer.from_crs(32610, 4326, always_xy=True).transform(500_600.0, 4_199_400.0)
    west, south, east, north = item.bbox
    assert west < centre[0] < east and south < centre[1] < north and -124 < west < -122
    stored = StoredCube(zarr.open_group(crop_store, mode="r")["cube"])
    assert props["inr:stored_bytes"] == stored.nbytes and props["inr:bpppb"] == pytest.approx(stored.bpppb)
    assert props["inr:codec"] == "xr_inr" and props["inr:chunk_methods"] == {"grid": 4}

    broken = item.clone()
    broken.properties["proj:shape"] = [40]  # the projection schema wants two numbers
    with pytest.raises(pystac.errors.STACValidationError, match="projection"):
        validate(broken)


def test_to_stac_item_of_a_cube_without_crs(jasper_crop):
    compressed = xr.DataArray(jasper_crop[:6, :24, :24], dims=("band", "y", "x"), name="r").inr.compress(
        1.0, steps=30, progress=False)
    item = compressed.inr.to_stac_item("s3://bucket/r.zarr", item_id="r")
    from xr_inr.stac import validate

    assert item.geometry is None and "proj:code" not in item.properties
    assert item.properties["cube:dimensions"]["x"] == {"type": "pixel", "extent": [0.0, 23.0]}
    assert len(validate(item)) == 2  # core + datacube


def test_quickstart_runs_as_written(jasper_crop, write_geotiff, tmp_path, monkeypatch, capsys):
    """docs/quickstart.md's commands and Python block, verbatim but for 30 fitting steps."""
    import re
    import shlex

    text = (REPO / "docs" / "quickstart.md").read_text()
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("xr-inr ")]
    assert [c.split()[1] for c in commands] == ["compress", "info", "preview", "stac", "decode"]
    (python,) = re.findall(r"```python\n(.*?)```", text, re.S)
    fit = 'cube.inr.to_zarr("scene-py.zarr", bpppb=0.1)'
    assert fit in python
    python = python.replace(fit, fit[:-1] + ", steps=30, progress=False)")

    cube = xr.DataArray(jasper_crop, dims=("band", "y", "x"), coords={"y": np.arange(40), "x": np.arange(40)})
    write_geotiff(cube, tmp_path / "scene.tif", nodata=None)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)[1:]
        assert cli.main(argv + (["--steps", "30", "--quiet"] if argv[0] == "compress" else [])) == 0, command
    exec(compile(python, "quickstart.md", "exec"), {})
    out = capsys.readouterr().out
    assert "scene.zarr: cube {'band': 40, 'y': 40, 'x': 40} uint16" in out and "methods: grid x 1" in out
    for written in ("scene.png", "scene.json", "decoded.tif", "scene-py.json", "decoded-py.tif"):
        assert (tmp_path / written).stat().st_size > 0, written
    for tif in ("decoded.tif", "decoded-py.tif"):
        back = rioxarray.open_rasterio(tmp_path / tif)
        assert back.dtype == np.uint16 and back.rio.crs.to_epsg() == 32610 and back.shape == (40, 40, 40)

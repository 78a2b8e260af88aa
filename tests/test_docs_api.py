"""docs/api.md gives the signatures of the public functions and methods as they are in the code."""

import inspect
import re
from pathlib import Path

import pytest

import xr_inr

REPO = Path(__file__).resolve().parent.parent


def _plain(name: str, func) -> str:
    """``name(a=1, *, b="x", **rest)``: the signature without annotations or self, as api.md writes it."""
    parts, star = [], False
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.default is p.empty:
            parts.append(p.name)
        else:
            default = f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
            parts.append(f"{p.name}={default}")
    return f"{name}({', '.join(parts)})"


def test_api_page_signatures_match_the_code():
    pytest.importorskip("pystac")
    import xr_inr.stac
    from xr_inr.xarray_zarr.accessor import INRDataArrayAccessor, INRDatasetAccessor

    text = re.sub(r"\s+", " ", (REPO / "docs" / "api.md").read_text())
    documented = {
        "INRCodec": xr_inr.INRCodec.__init__,
        "encode_block": xr_inr.INRCodec.encode_block,
        "encode_padded": xr_inr.INRCodec.encode_padded,
        "decode": xr_inr.INRCodec.decode,
        "xr_inr.decode_block": xr_inr.decode_block,
        "xr_inr.open_zarr": xr_inr.open_zarr,
        "xr_inr.verify": xr_inr.verify,
        "xr_inr.upgrade": xr_inr.upgrade,
        "xr_inr.stac.item_for": xr_inr.stac.item_for,
        "xr_inr.stac.validate": xr_inr.stac.validate,
    }
    for name in ("compress", "inspect_chunks", "to_zarr", "to_stac_item", "resample", "interp"):
        documented[f"DataArray.{name}"] = getattr(INRDataArrayAccessor, name)
    for name in ("cube_names", "compress", "to_zarr", "resample"):
        documented[f"Dataset.{name}"] = getattr(INRDatasetAccessor, name)
    missing = []
    for key, func in documented.items():
        expected = _plain(key.split(".")[-1] if key.startswith(("DataArray.", "Dataset.")) else key, func)
        if expected not in text:
            missing.append(expected)
    assert not missing, "docs/api.md lacks (or misstates) these signatures:\n" + "\n".join(missing)

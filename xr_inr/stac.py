"""STAC Items for compressed cubes, and their validation without a network.

:func:`item_for` describes one compressed cube stored in Zarr as a pystac
Item: the store as its ``data`` asset, the datacube extension (dimensions,
wavelengths, variable), the projection extension when the cube has a CRS
(``proj:code``, ``proj:shape``, ``proj:transform``, with bbox and geometry
reprojected to WGS84) and the codec under ``inr:`` fields. :func:`validate`
checks an Item against the core and extension schemas, read from pystac and
from the copies in ``xr_inr/stac_schemas`` (nothing is fetched). Needs the
``geo`` extra (pystac, rioxarray; jsonschema for :func:`validate`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import pystac
import pystac.validation
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable
from pystac.extensions.projection import ProjectionExtension

from .xarray_zarr.accessor import _source, find_band_dim


def item_for(cube: xr.DataArray, href: str, *, item_id: str | None = None, datetime: dt.datetime | None = None,
             zarr_format: int = 3) -> pystac.Item:
    """A STAC Item for ``cube`` (compressed, or opened with ``xr_inr.open_zarr``) stored at ``href``.

    ``datetime`` is the acquisition time when known; by default the time the
    Item is made. ``zarr_format`` goes into the asset's media type.
    """
    source = _source(cube)
    band_dim = find_band_dim(cube)
    crs = cube.rio.crs
    bbox = geometry = None
    if crs is not None:
        geometry, bbox = _footprint(cube)
    item = pystac.Item(
        id=item_id or Path(str(href).rstrip("/")).stem,
        geometry=geometry,
        bbox=bbox,
        datetime=datetime or dt.datetime.now(dt.timezone.utc),
        properties={},
    )
    item.add_asset("data", pystac.Asset(
        href=str(href), media_type=f"{pystac.MediaType.VND_ZARR}; version={zarr_format}", roles=["data"],
        title=f"{cube.name or 'cube'}, compressed with xr-inr",
    ))
    DatacubeExtension.ext(item, add_if_missing=True).apply(
        dimensions=_dimensions(cube, band_dim, crs),
        variables={str(cube.name or "cube"): Variable({"dimensions": [str(d) for d in cube.dims], "type": "data",
                                                       **_unit(cube.attrs)})},
    )
    if crs is not None:
        epsg = crs.to_epsg()
        transform = cube.rio.transform()
        ProjectionExtension.ext(item, add_if_missing=True).apply(
            code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else crs.to_wkt(),
            shape=[cube.rio.height, cube.rio.width], transform=list(transform)[:6],
            bbox=list(cube.rio.bounds()),
        )
    chunks = source.inspect_chunks().values()
    item.properties.update({
        "inr:codec": "xr_inr",
        "inr:version": metadata.version("xr-inr"),
        "inr:method": source.config["method"],
        "inr:chunk_methods": dict(Counter(info["method"] for info in chunks)),
        "inr:chunk_shape": list(source.chunk_shape),
        "inr:bpppb": source.bpppb,
        "inr:stored_bytes": source.nbytes,
    })
    if source.config.get("psnr") is not None:  # a quality target: what the chunks reached (each over itself)
        reached = [info["psnr"] for info in chunks if np.isfinite(info.get("psnr", np.nan))]
        item.properties["inr:psnr_target"] = source.config["psnr"]
        if reached:
            item.properties["inr:chunk_psnr_min"] = min(reached)
    return item


def _footprint(cube: xr.DataArray) -> tuple[dict, list[float]]:
    """GeoJSON polygon of the cube's four corners and its bbox, in WGS84 (lon, lat)."""
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs(cube.rio.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = cube.rio.bounds()
    lon, lat = to_wgs84.transform([left, right, right, left, left], [bottom, bottom, top, top, bottom])
    bbox = list(to_wgs84.transform_bounds(left, bottom, right, top, densify_pts=21))
    return {"type": "Polygon", "coordinates": [[[x, y] for x, y in zip(lon, lat, strict=True)]]}, bbox


def _unit(attrs: dict) -> dict:
    unit = attrs.get("units") or attrs.get("unit")
    return {"unit": str(unit)} if unit else {}


def _dimensions(cube: xr.DataArray, band_dim, crs) -> dict[str, Dimension]:
    dims = {}
    for dim in cube.dims:
        values = cube[dim].values if dim in cube.coords else np.arange(cube.sizes[dim])
        extent = [float(np.min(values)), float(np.max(values))]
        if dim == band_dim:
            dims[str(dim)] = Dimension.from_dict({
                "type": "spectral" if _unit(cube[dim].attrs) else "bands", "values": values.tolist(),
                "extent": extent, **_unit(cube[dim].attrs),
            })
        elif crs is not None and dim in (cube.rio.x_dim, cube.rio.y_dim):
            left, bottom, right, top = cube.rio.bounds()
            transform, epsg = cube.rio.transform(), crs.to_epsg()
            x = dim == cube.rio.x_dim
            dims[str(dim)] = Dimension.from_dict({
                "type": "spatial", "axis": "x" if x else "y", "extent": [left, right] if x else [bottom, top],
                "step": transform.a if x else transform.e, "reference_system": epsg or crs.to_wkt(),
            })
        else:  # no CRS: pixel rows and columns
            dims[str(dim)] = Dimension.from_dict({"type": "pixel", "extent": extent})
    return dims


class OfflineValidator(pystac.validation.JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with the extension schemas xr-inr's Items use, read from disk."""

    def __init__(self):
        super().__init__()  # the core STAC and GeoJSON schemas, shipped inside pystac
        folder = resources.files("xr_inr") / "stac_schemas"
        for entry in folder.iterdir():
            if entry.name.endswith(".json"):
                schema = json.loads(entry.read_text())
                self.schema_cache[schema["$id"]] = schema


def validate(item: pystac.Item) -> list[str]:
    """Validate ``item`` against its core and extension schemas, offline; the schema URIs checked.

    Raises ``pystac.errors.STACValidationError`` when the Item is invalid, and
    ``GetSchemaError`` naming a schema that is not vendored in ``xr_inr/stac_schemas``.
    """
    return item.validate(validator=OfflineValidator())

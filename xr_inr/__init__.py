"""xr-inr: hyperspectral compression with implicit neural representations.

``import xr_inr`` registers the ``xr_inr`` numcodecs codec and the
``DataArray.inr`` / ``Dataset.inr`` accessors (at once if xarray is already
imported, else as soon as it is). It stays light: a process that only
decodes chunks (a Zarr reader finding the codec through its entry point)
imports numpy and numcodecs, not xarray, dask, zarr or torch. The names
that need those are loaded on first use. The layout is in
docs/architecture.md.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from numcodecs.registry import register_codec

from .core.codec import INRCodec
from .core.decode import decode_block, inspect
from .core.encode import BudgetWarning, QualityWarning
from .core.stream import StreamError

register_codec(INRCodec)

_LAZY = {  # name: the module that holds it (imports xarray, dask or zarr)
    "BandDimError": "xarray_zarr.accessor",
    "INRDataArrayAccessor": "xarray_zarr.accessor",
    "INRDatasetAccessor": "xarray_zarr.accessor",
    "find_band_dim": "xarray_zarr.accessor",
    "open_zarr": "xarray_zarr.store",
    "verify": "xarray_zarr.store",
    "upgrade": "xarray_zarr.store",
    "StoreReport": "xarray_zarr.store",
    "ChunkError": "xarray_zarr.sources",
    "INRZarrCodec": "xarray_zarr.zarr_codec",
}

__all__ = ["BudgetWarning", "INRCodec", "QualityWarning", "StreamError", "decode_block", "inspect", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _register_accessors() -> None:
    importlib.import_module(".xarray_zarr.accessor", __name__)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback`` right after the module ``name`` is first imported (a post-import hook)."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec with the other finders
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _ExecThenCall(spec.loader, self)
        return spec


class _ExecThenCall:
    """A loader that runs the real one, then the hook's callback (once)."""

    def __init__(self, loader, hook: _AfterImport):
        self._loader, self._hook = loader, hook

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
            self._hook.callback()


if "xarray" in sys.modules:
    _register_accessors()
else:  # importing xarray takes ~0.4 s, which a decode-only process need not pay
    sys.meta_path.insert(0, _AfterImport("xarray", _register_accessors))

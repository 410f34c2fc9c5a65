"""driftgate: serve scikit-learn models as ONNX over gRPC and watch them in production.

The library's entry points::

    import driftgate
    result = driftgate.convert(fitted_estimator, "train.csv", "churn", "models", target="y")

    from driftgate.client import Gateway, Control, Monitor   # the Python client

``driftgate.convert`` is ``driftgate.converter.convert``, imported when first used (it
brings scikit-learn and ONNX with it), so ``import driftgate`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("driftgate")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "convert"]


def __getattr__(name: str) -> Any:
    # Imported by name, on first use: the gateway imports this package (for ``__version__``)
    # and must never import the converter, not even as a dependency the layer check sees.
    if name == "convert":
        return import_module("driftgate.converter").convert
    raise AttributeError(f"module 'driftgate' has no attribute {name!r}")

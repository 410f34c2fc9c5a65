"""driftgate converter: scikit-learn estimator -> ONNX + reference profile + metadata.

Usage::

    from driftgate.converter import convert
    result = convert(fitted_estimator, "train.csv", "churn", "models", target="churned")
    print(result.version, result.parity.format())

See ``converter.convert`` for the steps, ``converter.support`` for what is accepted (every
estimator skl2onnx has a converter registered for) and the task of each, ``converter.export``
for the ONNX input layout and
output names, ``converter.parity`` for the tolerance, ``driftgate.core.profile`` for the binning
rule shared with the gateway.
"""

from __future__ import annotations

from driftgate.converter.convert import (
    ConversionResult,
    ConverterSettings,
    convert,
    holdout_split,
    load_estimator,
)
from driftgate.converter.data import Table, load_table, save_table_npz, table_from_object
from driftgate.converter.export import Layout, make_layout
from driftgate.converter.parity import ParityError, ParityReport, Tolerance
from driftgate.converter.support import UnsupportedEstimator, check_supported, supported_names
from driftgate.core.profile import ReferenceProfile, bin_index

__all__ = [
    "ConversionResult",
    "ConverterSettings",
    "Layout",
    "ParityError",
    "ParityReport",
    "ReferenceProfile",
    "Table",
    "Tolerance",
    "UnsupportedEstimator",
    "bin_index",
    "check_supported",
    "convert",
    "holdout_split",
    "load_estimator",
    "load_table",
    "make_layout",
    "save_table_npz",
    "supported_names",
    "table_from_object",
]

"""What both processes export beside their own metrics, and the bounded causes of decisions.

``register_process_metrics`` adds to a private registry what the default registry of
prometheus_client would have held (``process_*`` and ``python_info``), plus
``driftgate_build_info``: a private registry starts empty, and without these an operator
cannot see memory, CPU, open files or which release runs where.

Promotions and rollbacks are counted by *cause*, a word from a fixed vocabulary, never by the
free-text reason (which carries figures and would make a new series per event): the full
reason stays in the deployment history and the monitor's events. The monitor names the cause
of an automatic action in the ``driftgate-cause`` metadata of its Control call; a call without
it is an operator's.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector

__all__ = [
    "BUILD_PACKAGES",
    "CAUSE_METADATA",
    "PROMOTION_CAUSES",
    "ROLLBACK_CAUSES",
    "build_info",
    "register_process_metrics",
]

#: gRPC metadata key naming the cause of a Promote or Rollback (one of the vocabularies below)
CAUSE_METADATA = "driftgate-cause"
OPERATOR = "operator"
#: operator: a person or a script; canary_passed: every required check of the analysis passed
PROMOTION_CAUSES = (OPERATOR, "canary_passed")
#: canary_failed: a check found the canary worse than the stable; insufficient_evidence: the
#: analysis reached its deadline without every required check passing
ROLLBACK_CAUSES = (OPERATOR, "canary_failed", "insufficient_evidence")
#: the distributions whose versions ``driftgate_build_info`` carries, as labels
BUILD_PACKAGES = ("grpcio", "numpy", "onnxruntime", "scipy", "prometheus_client")


def _distribution_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def build_info() -> dict[str, str]:
    """The labels of ``driftgate_build_info``: driftgate's version, Python's and the main
    libraries' ("" for one that is not installed)."""
    labels = {"version": _distribution_version("driftgate") or "0.0.0"}
    labels["python"] = platform.python_version()
    for name in BUILD_PACKAGES:
        labels[name] = _distribution_version(name)
    return labels


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Add ``process_*``, ``python_info`` and ``driftgate_build_info`` to ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Info(
        "driftgate_build", "The running driftgate release and its main libraries", registry=registry
    )
    info.info(build_info())

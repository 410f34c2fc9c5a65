"""Shared fixtures: one repository of small models and one gateway serving it, per session.

Modules that need other flags (``--batching off``, small limits, the queue path) or that
mutate the repository (hot swap, failed loads) start their own module-scoped gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient

from tests.processes import DriftgateProcess
from tests.triton.helpers import (
    DATATYPES,
    Zoo,
    gather_model,
    identity_model,
    logistic_model,
    mixed_model,
    row_sum_model,
    run_gateway,
    write_deployment,
    write_version,
)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    repo = tmp_path_factory.mktemp("repository")
    logistic, logistic_v2, mixed = logistic_model(0), logistic_model(7), mixed_model()
    # Each test that counts or unloads gets a model of its own, so order does not matter.
    for name in ("lr", "lr_stats", "lr_unload", "lr_metered", "lr_ids"):
        write_version(repo, name, 1, logistic.onnx)
    write_version(repo, "lr_dg", 1, logistic.onnx, driftgate=True)
    # Two versions loaded at once: stable 2 and canary 1 (weight 0).
    write_version(repo, "twover", 1, logistic.onnx, driftgate=True)
    write_version(repo, "twover", 2, logistic_v2.onnx, driftgate=True)
    write_deployment(repo, "twover", {"stable": 2, "canary": {"version": 1, "weight": 0}})
    for datatype in DATATYPES:
        write_version(repo, f"identity_{datatype.lower()}", 1, identity_model(datatype))
    write_version(repo, "mixed", 1, mixed.onnx)
    write_version(repo, "gather", 1, gather_model())
    write_version(repo, "row_sum", 1, row_sum_model())
    return Zoo(repo, logistic, logistic_v2, mixed)


@pytest.fixture(scope="session")
def gateway(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    """The shared gateway with default flags, serving the zoo."""
    yield from run_gateway(zoo.repo, tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="session")
def client(gateway: DriftgateProcess) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(gateway.address)
    yield triton
    triton.close()

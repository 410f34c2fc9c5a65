"""Prometheus metrics on the metrics port, with the labels the dashboards use."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import Zoo, sample, scrape

pytestmark = pytest.mark.integration


def lr_inputs(X: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("X", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return [tensor]


def test_request_counts_and_latency_histograms(
    zoo: Zoo, gateway: DriftgateProcess, client: grpcclient.InferenceServerClient
) -> None:
    labels = {"model": "lr_metered", "version": "1"}
    for rows in (1, 2, 3, 4, 5):
        client.infer("lr_metered", lr_inputs(zoo.logistic.X[:rows]))
    for _ in range(3):
        with pytest.raises(InferenceServerException):
            client.infer("lr_metered", lr_inputs(zoo.logistic.X[:2, :3]))

    samples = scrape(gateway.metrics_port)
    requests = "driftgate_inference_requests_total"
    assert sample(samples, requests, status="OK", **labels) == 5
    assert sample(samples, requests, status="INVALID_ARGUMENT", **labels) == 3
    for histogram in (
        "driftgate_inference_request_duration_seconds",
        "driftgate_inference_queue_duration_seconds",
        "driftgate_inference_compute_duration_seconds",
    ):
        assert sample(samples, f"{histogram}_count", **labels) == 5, histogram
        assert sample(samples, f"{histogram}_bucket", le="+Inf", **labels) == 5, histogram
    assert sample(samples, "driftgate_inference_request_duration_seconds_sum", **labels) > 0
    assert sample(samples, "driftgate_inference_compute_duration_seconds_sum", **labels) > 0
    # each request ran alone (the model is cheap, so inline): batches of 1..5 rows
    assert sample(samples, "driftgate_batch_size_count", **labels) == 5
    assert sample(samples, "driftgate_batch_size_sum", **labels) == 15
    assert sample(samples, "driftgate_batch_size_bucket", le="4.0", **labels) == 4
    assert sample(samples, "driftgate_queue_depth", **labels) == 0


def test_load_duration_and_loaded_versions_with_roles(gateway: DriftgateProcess) -> None:
    samples = scrape(gateway.metrics_port)
    for model in ("lr", "mixed", "identity_bytes"):
        count = sample(
            samples, "driftgate_model_load_duration_seconds_count", model=model, version="1"
        )
        assert count == 1, model
        assert sample(samples, "driftgate_model_loaded", model=model, version="1") == 1
    loaded = {
        (lab["version"], lab["role"]): value
        for name, lab, value in samples
        if name == "driftgate_model_loaded" and lab["model"] == "twover"
    }
    assert loaded == {("2", "stable"): 1, ("1", "canary"): 1}
    # traffic as a ratio 0-1: the canary at weight 0 takes none, the stable all
    ratios = {
        (lab["version"], lab["role"]): value
        for name, lab, value in samples
        if name == "driftgate_traffic_ratio" and lab["model"] == "twover"
    }
    assert ratios == {("2", "stable"): 1.0, ("1", "canary"): 0.0}
    failures = [n for n, lab, v in samples if n == "driftgate_model_load_failures_total"]
    assert failures == []
    # a private registry, with what the default one would hold, and which release this is
    (build,) = [lab for name, lab, _ in samples if name == "driftgate_build_info"]
    assert {"version", "python", "onnxruntime", "grpcio"} <= build.keys()
    assert (sample(samples, "process_resident_memory_bytes") or 0) > 10e6
    assert sample(samples, "process_open_fds") is not None

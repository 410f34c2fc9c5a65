"""Protobuf views of loaded versions: ModelMetadata, ModelConfig, ModelStatistics, the index."""

from __future__ import annotations

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import model_config_pb2 as mc
from driftgate.gateway.dataplane.record import Timing
from driftgate.gateway.dataplane.session import TensorSpec
from driftgate.gateway.dataplane.version import VersionRuntime
from driftgate.gateway.manager import ModelManager, ModelState

__all__ = ["model_config", "model_metadata", "model_statistics", "repository_index"]

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


def _tensor_metadata(spec: TensorSpec, batched: bool) -> pb.ModelMetadataResponse.TensorMetadata:
    shape = [-1, *spec.shape] if batched else list(spec.shape)
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=shape
    )


def model_metadata(state: ModelState, version: VersionRuntime) -> pb.ModelMetadataResponse:
    batched = version.batched
    return pb.ModelMetadataResponse(
        name=state.name,
        versions=[str(v) for v in sorted(state.loaded)],
        platform=PLATFORM,
        inputs=[_tensor_metadata(s, batched) for s in version.inputs],
        outputs=[_tensor_metadata(s, batched) for s in version.outputs],
    )


def _dims(spec: TensorSpec) -> tuple[list[int], mc.ModelTensorReshape | None]:
    # Triton cannot express a per-row scalar: it uses dims [1] reshaped to [].
    if not spec.shape:
        return [1], mc.ModelTensorReshape(shape=[])
    return list(spec.shape), None


def _model_input(spec: TensorSpec) -> mc.ModelInput:
    dims, reshape = _dims(spec)
    return mc.ModelInput(
        name=spec.name,
        data_type=f"TYPE_{_type(spec)}",
        dims=dims,
        reshape=reshape,
    )


def _model_output(spec: TensorSpec) -> mc.ModelOutput:
    dims, reshape = _dims(spec)
    return mc.ModelOutput(
        name=spec.name,
        data_type=f"TYPE_{_type(spec)}",
        dims=dims,
        reshape=reshape,
    )


def _type(spec: TensorSpec) -> str:
    return "STRING" if spec.datatype == "BYTES" else spec.datatype


def model_config(version: VersionRuntime) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=version.model,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=version.max_batch_size,
        input=[_model_input(s) for s in version.inputs],
        output=[_model_output(s) for s in version.outputs],
        version_policy=mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=[version.version])
        ),
        instance_group=[
            mc.ModelInstanceGroup(name=version.model, count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
        ],
        default_model_filename="model.onnx",
    )
    batching = version.batching
    if batching.enabled and version.batched:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=list(batching.preferred_batch_sizes),
                max_queue_delay_microseconds=batching.max_queue_delay_us,
                default_queue_policy=mc.ModelQueuePolicy(max_queue_size=batching.max_queue_size),
            )
        )
    labels = version.metadata.get("class_labels")
    if labels:
        config.parameters["class_labels"].string_value = ",".join(map(str, labels))
    return config


def _duration(timing: Timing) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=timing.count, ns=timing.ns)


def model_statistics(version: VersionRuntime) -> pb.ModelStatistics:
    """Triton's ModelStatistics of one loaded version, read from its record."""
    r = version.record
    return pb.ModelStatistics(
        name=version.model,
        version=str(version.version),
        last_inference=r.last_inference_ms,
        inference_count=r.inference_count,
        execution_count=r.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(r.success),
            fail=_duration(r.fail),
            queue=_duration(r.queue),
            compute_input=_duration(r.compute_input),
            compute_infer=_duration(r.compute_infer),
            compute_output=_duration(r.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=rows,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for rows, b in sorted(r.batches.items())
        ],
    )


def repository_index(manager: ModelManager, ready_only: bool) -> pb.RepositoryIndexResponse:
    """One entry per version on disk: READY when loaded, UNAVAILABLE with the reason if not."""
    states = {s.name: s for s in manager.states()}
    entries = []
    for name in sorted(set(manager.repository.models()) | set(states)):
        state = states.get(name)
        on_disk = manager.on_disk(name)
        for number in sorted(set(on_disk) | set(state.loaded if state else {})):
            if state is not None and not state.unloaded and number in state.loaded:
                entries.append((name, number, "READY", ""))
            elif state is not None and number in state.failures:
                entries.append((name, number, "UNAVAILABLE", state.failures[number].reason))
            else:
                reason = "unloaded" if state is not None and state.unloaded else "not deployed"
                entries.append((name, number, "UNAVAILABLE", reason))
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=name, version=str(number), state=state, reason=reason
            )
            for name, number, state, reason in entries
            if not ready_only or state == "READY"
        ]
    )

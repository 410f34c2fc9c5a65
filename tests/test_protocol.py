"""The wire contracts: generated stubs import, services are complete, the inference
protocol is the one tritonclient speaks, and the committed stubs are fresh.

tritonclient bundles its own compiled copy of Triton's protos. The protobuf runtime
refuses two files that define the same symbols in one process, so its descriptors are
dumped in a subprocess and compared with ours as JSON.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

GENERATED = [
    "driftgate.core._proto.inference.model_config_pb2",
    "driftgate.core._proto.inference.grpc_service_pb2",
    "driftgate.core._proto.inference.grpc_service_pb2_grpc",
    "driftgate.core._proto.driftgate.control.v1.control_pb2",
    "driftgate.core._proto.driftgate.control.v1.control_pb2_grpc",
    "driftgate.core._proto.driftgate.feedback.v1.feedback_pb2",
    "driftgate.core._proto.driftgate.feedback.v1.feedback_pb2_grpc",
    "driftgate.core._proto.driftgate.monitor.v1.monitor_pb2",
    "driftgate.core._proto.driftgate.monitor.v1.monitor_pb2_grpc",
]

SERVICES = {
    ("driftgate.core._proto.inference.grpc_service_pb2", "GRPCInferenceService"): {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
        "TraceSetting",
        "LogSettings",
    },
    ("driftgate.core._proto.driftgate.control.v1.control_pb2", "Control"): {
        "Deploy",
        "SetTraffic",
        "StartShadow",
        "StopShadow",
        "Promote",
        "Rollback",
        "GetStatus",
        "GetHistory",
    },
    ("driftgate.core._proto.driftgate.feedback.v1.feedback_pb2", "Feedback"): {"SendLabels"},
    ("driftgate.core._proto.driftgate.monitor.v1.monitor_pb2", "Monitor"): {
        "Report",
        "SendLabels",
        "GetDrift",
        "GetAccuracy",
        "ListEvents",
        "Retrain",
    },
}

# Runs both here and in the tritonclient subprocess: `dump(modules)` returns the JSON-able
# shape of every message, enum and service the modules' files define.
DUMP_SOURCE = """
from google.protobuf import descriptor_pb2

def dump(modules):
    out = {"messages": {}, "enums": {}, "services": {}}
    type_name = descriptor_pb2.FieldDescriptorProto.Type.Name
    label_name = descriptor_pb2.FieldDescriptorProto.Label.Name

    def enum(scope, e):
        out["enums"][f"{scope}.{e.name}"] = {v.name: v.number for v in e.value}

    def message(scope, m):
        name = f"{scope}.{m.name}"
        oneofs = [o.name for o in m.oneof_decl]
        out["messages"][name] = {
            f.name: [
                f.number,
                type_name(f.type),
                label_name(f.label),
                f.type_name,
                oneofs[f.oneof_index] if f.HasField("oneof_index") else "",
            ]
            for f in m.field
        }
        for n in m.nested_type:
            message(name, n)
        for e in m.enum_type:
            enum(name, e)

    for module in modules:
        fd = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fd)
        scope = "." + fd.package
        for m in fd.message_type:
            message(scope, m)
        for e in fd.enum_type:
            enum(scope, e)
        for s in fd.service:
            out["services"][f"{scope}.{s.name}"] = {
                r.name: [r.input_type, r.output_type, r.client_streaming, r.server_streaming]
                for r in s.method
            }
    return out
"""

TRITON_DUMP = (
    DUMP_SOURCE
    + """
import json
from tritonclient.grpc import model_config_pb2, service_pb2
print(json.dumps(dump([model_config_pb2, service_pb2])))
"""
)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dump(modules: list[Any]) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(DUMP_SOURCE, namespace)
    return namespace["dump"](modules)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    from driftgate.core._proto.inference import grpc_service_pb2, model_config_pb2

    return dump([model_config_pb2, grpc_service_pb2])


@pytest.fixture(scope="module")
def theirs() -> dict[str, Any]:
    result = run_python(TRITON_DUMP)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def needed_by_service(shape: dict[str, Any]) -> set[str]:
    """Messages and enums reachable from the service's requests and responses."""
    todo = [
        t for rpc in shape["services"][".inference.GRPCInferenceService"].values() for t in rpc[:2]
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        fields = shape["messages"].get(name, {})
        todo += [f[3] for f in fields.values() if f[3]]
        todo += [n for n in shape["messages"] if n.startswith(name + ".")]
    return seen


@pytest.mark.parametrize("module", GENERATED)
def test_generated_module_imports_with_qualified_imports(module: str) -> None:
    mod = importlib.import_module(module)
    source = Path(mod.__file__ or "").read_text()
    # protoc writes imports relative to -I proto; they only resolve once package-qualified.
    unqualified = ("from inference", "from driftgate.", "import inference", "import driftgate")
    lines = source.splitlines()
    assert not [
        line
        for line in lines
        if line.startswith(unqualified) and not line.startswith("from driftgate.core._proto.")
    ]


@pytest.mark.parametrize(("where", "methods"), SERVICES.items(), ids=lambda x: str(x))
def test_service_has_expected_methods(where: tuple[str, str], methods: set[str]) -> None:
    module, service = where
    pb2 = importlib.import_module(module)
    grpc_mod = importlib.import_module(module + "_grpc")
    assert set(pb2.DESCRIPTOR.services_by_name[service].methods_by_name) == methods
    servicer = getattr(grpc_mod, f"{service}Servicer")
    assert all(callable(getattr(servicer, m, None)) for m in methods)
    assert hasattr(grpc_mod, f"{service}Stub")
    assert hasattr(grpc_mod, f"add_{service}Servicer_to_server")


def test_monitor_reuses_feedback_messages() -> None:
    from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2
    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2

    rpc = monitor_pb2.DESCRIPTOR.services_by_name["Monitor"].methods_by_name["SendLabels"]
    assert rpc.input_type is feedback_pb2.SendLabelsRequest.DESCRIPTOR
    assert rpc.output_type is feedback_pb2.SendLabelsResponse.DESCRIPTOR


def test_every_field_we_define_matches_tritonclient(
    ours: dict[str, Any], theirs: dict[str, Any]
) -> None:
    for kind in ("messages", "enums"):
        for name, members in ours[kind].items():
            assert name in theirs[kind], f"{name} is not in Triton's protocol"
            # Complete and identical: every field (number, type, label, type name, oneof).
            assert members == theirs[kind][name], name


def test_everything_the_service_needs_is_present(
    ours: dict[str, Any], theirs: dict[str, Any]
) -> None:
    their_service = theirs["services"][".inference.GRPCInferenceService"]
    assert ours["services"][".inference.GRPCInferenceService"] == their_service
    missing = needed_by_service(theirs) - ours["messages"].keys() - ours["enums"].keys()
    assert not missing


def test_bytes_we_write_parse_as_tritonclient_messages() -> None:
    from driftgate.core._proto.inference import grpc_service_pb2, model_config_pb2

    config = model_config_pb2.ModelConfig(
        name="iris", platform="onnxruntime_onnx", max_batch_size=64
    )
    config.input.add(name="X", data_type=model_config_pb2.TYPE_FP32, dims=[4])
    config.dynamic_batching.max_queue_delay_microseconds = 500
    response = grpc_service_pb2.ModelConfigResponse(config=config)
    parse = """
import sys
from google.protobuf import json_format
from tritonclient.grpc import service_pb2
msg = service_pb2.ModelConfigResponse.FromString(bytes.fromhex(sys.argv[1]))
print(json_format.MessageToJson(msg, indent=None))
"""
    result = run_python(parse, response.SerializeToString().hex())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "config": {
            "name": "iris",
            "platform": "onnxruntime_onnx",
            "maxBatchSize": 64,
            "input": [{"name": "X", "dataType": "TYPE_FP32", "dims": ["4"]}],
            "dynamicBatching": {"maxQueueDelayMicroseconds": "500"},
        }
    }


def test_proto_dir_is_idl_only() -> None:
    files = [p for p in (ROOT / "proto").rglob("*") if p.is_file()]
    assert files
    assert all(p.suffix == ".proto" for p in files), files


def test_committed_stubs_are_fresh() -> None:
    result = run_python("", "scripts/gen_proto.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr

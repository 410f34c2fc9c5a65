"""The transport floor: a bare grpc.aio server that does a gateway's wire work and no model.

It parses each ModelInferRequest, reads the raw input with ``np.frombuffer`` and answers a
ModelInferResponse of the same size as a classifier's (``label`` INT64 [n] and
``probabilities`` FP32 [n, 2], built from ``tobytes()``). No gateway can answer faster with
the same Python, grpcio and protobuf, so it is the yardstick for driftgate's own overhead.

    python benchmarks/floor_server.py --port 0 --ready-file /tmp/floor.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from driftgate.core._proto.inference import grpc_service_pb2 as pb  # noqa: E402
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

Output = pb.ModelInferResponse.InferOutputTensor


class FloorServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer without a model; registered exactly as the gateway registers its servicer."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context: object) -> Any:
        tensor = request.inputs[0]
        features = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        rows = features.reshape(tensor.shape).shape[0]
        label = np.zeros(rows, dtype="<i8")
        probabilities = np.full((rows, 2), 0.5, dtype="<f4")
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id or "floor",
            outputs=[
                Output(name="label", datatype="INT64", shape=[rows]),
                Output(name="probabilities", datatype="FP32", shape=[rows, 2]),
            ],
            raw_output_contents=[label.tobytes(), probabilities.tobytes()],
        )

    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> Any:
        return pb.ModelReadyResponse(ready=True)


async def serve(port: int, ready_file: Path | None) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    if ready_file is not None:
        temporary = ready_file.with_name(ready_file.name + ".tmp")
        temporary.write_text(json.dumps({"grpc_port": bound, "pid": os.getpid()}))
        os.replace(temporary, ready_file)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.ready_file))


if __name__ == "__main__":
    main()

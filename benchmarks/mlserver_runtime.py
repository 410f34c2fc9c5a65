"""A minimal custom MLServer runtime that serves an ONNX model with onnxruntime.

Runs inside MLServer (benchmarks/.mlserver-venv), not in the project environment. It does
what a user of MLServer 1.7 would write: decode the v2 request with MLServer's codecs, run the
session, encode each output with the NumPy codec.

model-settings.json: {"implementation": "mlserver_runtime.OnnxRuntime",
                      "parameters": {"uri": "./model.onnx"}}
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as driftgate's default, and fair on 2 cores
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        features = np.asarray(features, dtype=np.float32)
        results = self._session.run(None, {self._input: features})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )

"""tritonclient against a gateway serving TLS and mutual TLS, as against Triton with SSL on.

``InferenceServerClient(url, ssl=True, root_certificates=CA)`` for TLS, plus
``private_key``/``certificate_chain`` for mutual TLS; the control token travels as the
``authorization`` header tritonclient's calls take. Certificates are made in the test
(``tests/certificates.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.certificates import Authority, Issued, Pki
from tests.processes import DriftgateProcess
from tests.triton.helpers import Zoo, run_gateway, status_of, tensor

pytestmark = pytest.mark.integration

CONTROL_TOKEN = "control-token-for-triton-tls-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def _tls_flags(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.server.cert_path), "--tls-key", str(pki.server.key_path)]


@pytest.fixture(scope="module")
def tls_gateway(
    zoo: Zoo, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(zoo.repo, tmp_path_factory.mktemp("tls"), *_tls_flags(pki))


@pytest.fixture(scope="module")
def mtls_gateway(
    zoo: Zoo, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(
        zoo.repo,
        tmp_path_factory.mktemp("mtls"),
        *_tls_flags(pki),
        "--tls-client-ca",
        str(pki.ca.cert_path),
        "--control-token",
        CONTROL_TOKEN,
    )


def _client(
    address: str, ca: Authority | None, client: Issued | None = None
) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(
        address,
        ssl=True,
        root_certificates=str(ca.cert_path) if ca else None,
        private_key=str(client.key_path) if client else None,
        certificate_chain=str(client.cert_path) if client else None,
    )


def _infer_lr(triton: grpcclient.InferenceServerClient, X: np.ndarray) -> np.ndarray:
    result = triton.infer("lr", [tensor("X", X, "FP32")], client_timeout=10)
    labels = result.as_numpy("label")
    assert labels is not None
    return labels


def _refusal(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The status of ``call(*args, **kwargs)``, which must fail."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return status_of(caught.value)


def test_tritonclient_with_ssl_infers_over_tls(
    tls_gateway: DriftgateProcess, pki: Pki, zoo: Zoo
) -> None:
    X = zoo.logistic.X[:16]
    for address in (tls_gateway.address, f"localhost:{tls_gateway.grpc_port}"):
        triton = _client(address, pki.ca)
        try:
            assert triton.is_server_live() and triton.is_server_ready()
            assert triton.is_model_ready("lr")
            assert triton.get_model_metadata("lr").name == "lr"
            np.testing.assert_array_equal(_infer_lr(triton, X), zoo.logistic.estimator.predict(X))
        finally:
            triton.close()


def test_tritonclient_aio_with_ssl(tls_gateway: DriftgateProcess, pki: Pki, zoo: Zoo) -> None:
    X = zoo.logistic.X[:8]

    async def main() -> list[np.ndarray]:
        triton = aioclient.InferenceServerClient(
            tls_gateway.address, ssl=True, root_certificates=str(pki.ca.cert_path)
        )
        try:
            results = await asyncio.gather(
                *(triton.infer("lr", [tensor("X", X[i : i + 1], "FP32")]) for i in range(8))
            )
            return [r.as_numpy("label") for r in results]
        finally:
            await triton.close()

    labels = np.concatenate(asyncio.run(main()))
    np.testing.assert_array_equal(labels, zoo.logistic.estimator.predict(X))


def test_tls_gateway_refuses_plaintext_and_is_refused_by_other_cas(
    tls_gateway: DriftgateProcess, pki: Pki, zoo: Zoo
) -> None:
    X = zoo.logistic.X[:1]
    plain = grpcclient.InferenceServerClient(tls_gateway.address)
    try:
        assert _refusal(_infer_lr, plain, X) == "UNAVAILABLE"
    finally:
        plain.close()
    distrustful = _client(tls_gateway.address, pki.untrusted_ca)
    try:
        assert _refusal(_infer_lr, distrustful, X) == "UNAVAILABLE"
    finally:
        distrustful.close()


def test_tritonclient_mutual_tls_with_a_client_certificate(
    mtls_gateway: DriftgateProcess, pki: Pki, zoo: Zoo
) -> None:
    X = zoo.logistic.X[:4]
    for who in (None, pki.impostor):
        refused = _client(mtls_gateway.address, pki.ca, who)
        try:
            assert _refusal(_infer_lr, refused, X) == "UNAVAILABLE"
        finally:
            refused.close()
    triton = _client(mtls_gateway.address, pki.ca, pki.operator)
    try:
        np.testing.assert_array_equal(_infer_lr(triton, X), zoo.logistic.estimator.predict(X))
        assert triton.is_model_ready("lr")
    finally:
        triton.close()


def test_tritonclient_repository_control_needs_the_token_over_mutual_tls(
    mtls_gateway: DriftgateProcess, pki: Pki, zoo: Zoo
) -> None:
    """A certificate gets a client in; unloading a model still needs the control token."""
    triton = _client(mtls_gateway.address, pki.ca, pki.operator)
    good = {"authorization": f"Bearer {CONTROL_TOKEN}"}
    try:
        for headers in (None, {"authorization": "Bearer not-the-token"}):
            status = _refusal(triton.unload_model, "lr_unload", headers=headers)
            assert status == "UNAUTHENTICATED"
            assert triton.is_model_ready("lr_unload")
        triton.unload_model("lr_unload", headers=good)
        assert not triton.is_model_ready("lr_unload")
        assert _refusal(triton.load_model, "lr_unload") == "UNAUTHENTICATED"
        assert not triton.is_model_ready("lr_unload")
        triton.load_model("lr_unload", headers=good)
        assert triton.is_model_ready("lr_unload")
    finally:
        triton.close()

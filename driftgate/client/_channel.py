"""The connection every client class holds: a channel, its token, a default timeout, and
gRPC errors translated into ``driftgate.client.errors``."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from driftgate.client.errors import InvalidArgument, error_from_rpc
from driftgate.core.auth import TokenSource
from driftgate.core.errors import DriftgateError
from driftgate.core.rpc import aio_channel, channel
from driftgate.core.tls import ClientTLS

__all__ = ["AsyncConnection", "Connection"]

#: messages up to the gateway's default limit (64 MiB), both ways
_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _Base:
    def __init__(
        self,
        address: str,
        tls: ClientTLS | None,
        token: str | None,
        token_file: str | Path | None,
        timeout: float,
    ) -> None:
        self.address = address
        self.tls = tls
        self.timeout = timeout
        try:
            # A file is read again when it changes: a rotated secret needs no new client.
            self._token = TokenSource(token, Path(token_file) if token_file else None)
        except DriftgateError as exc:
            raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, exc.message) from exc
        self._actor = _actor()

    def metadata(self) -> list[tuple[str, str]]:
        metadata = [("driftgate-actor", self._actor)]
        token = self._token.current()
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        return metadata


class Connection(_Base):
    """A blocking channel to ``address``."""

    def __init__(
        self,
        address: str,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(address, tls, token, token_file, timeout)
        self.channel = channel(address, tls, _OPTIONS)

    def call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self.metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def close(self) -> None:
        self.channel.close()


class AsyncConnection(_Base):
    """An asyncio channel to ``address``; made in (and bound to) the running event loop."""

    def __init__(
        self,
        address: str,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(address, tls, token, token_file, timeout)
        self.channel = aio_channel(address, tls, _OPTIONS)

    async def call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self.metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    async def close(self) -> None:
        await self.channel.close(None)

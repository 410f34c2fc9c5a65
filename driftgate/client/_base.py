"""What every client class shares: its connection, its stub, ``_run``, closing, ``with``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from driftgate.client._call import Call
from driftgate.client._channel import AsyncConnection, Connection
from driftgate.core.tls import ClientTLS

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


class Client:
    """A blocking client of one service at ``address`` (``DEFAULT_ADDRESS`` when None)."""

    DEFAULT_ADDRESS: ClassVar[str] = "localhost:8001"
    _stub_class: ClassVar[Any]

    def __init__(
        self,
        address: str | None = None,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._connection = Connection(
            address or self.DEFAULT_ADDRESS,
            tls=tls,
            token=token,
            token_file=token_file,
            timeout=timeout,
        )
        self._open(self._connection.channel)

    def _open(self, channel: Any) -> None:
        """Make the stubs on ``channel`` (a subclass with more than one adds them here)."""
        self._stub = self._stub_class(channel)

    def _run(self, call: Call[T]) -> T:
        method = getattr(self._stub, call.method)
        return call.parse(self._connection.call(method, call.request, call.timeout))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """``Client`` for asyncio: the same calls, awaited. Make it inside the running loop."""

    DEFAULT_ADDRESS: ClassVar[str] = "localhost:8001"
    _stub_class: ClassVar[Any]

    def __init__(
        self,
        address: str | None = None,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._connection = AsyncConnection(
            address or self.DEFAULT_ADDRESS,
            tls=tls,
            token=token,
            token_file=token_file,
            timeout=timeout,
        )
        self._open(self._connection.channel)

    def _open(self, channel: Any) -> None:
        """Make the stubs on ``channel`` (a subclass with more than one adds them here)."""
        self._stub = self._stub_class(channel)

    async def _run(self, call: Call[T]) -> T:
        method = getattr(self._stub, call.method)
        return call.parse(await self._connection.call(method, call.request, call.timeout))

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

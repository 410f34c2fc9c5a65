"""TLS settings of driftgate's listeners and clients: which files, nothing more.

A server takes a certificate chain and key (``--tls-cert``, ``--tls-key``) and, to require
client certificates, the CA that signs them (``--tls-client-ca``). A client takes the CA that
signs the server's certificate (``--tls-ca``) and, for mutual TLS, its own certificate and
key. ``driftgate.core.rpc`` turns these into gRPC credentials; a server's files are read
again when they change, at the next handshake, so a rotated certificate (cert-manager) is
served without a restart. This module is plain data, so that settings can hold it without
importing a transport.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientTLS", "ServerTLS"]


@dataclass(frozen=True)
class ServerTLS:
    """A listener's certificate and key, and the CA its clients' certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def files(self) -> list[Path]:
        return [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """(mtime, size) of every file: changes when any file is replaced."""
        stamps = []
        for path in self.files():
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_size))
        return tuple(stamps)


@dataclass(frozen=True)
class ClientTLS:
    """What a client needs to verify a server, and to present itself under mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

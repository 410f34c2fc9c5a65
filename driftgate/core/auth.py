"""Credentials: which bearer token each door needs, checked in constant time.

Two roles, two tokens, so that a gateway's reporting credential cannot deploy:

- ``operator``: Control's mutating calls, RepositoryModelLoad/Unload, the monitor's Retrain;
- ``ingest``: statistics reports, prediction records and labels (the gateway's reporter, and
  applications sending labels).

A token comes from a literal or from a file; a file is read again when it changes (a rotated
Kubernetes Secret), so a new token takes effect without a restart. A peer whose verified
client certificate (mutual TLS) names a subject listed for a role is let in without a token.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftgate.core.errors import InvalidInput, Unauthenticated

__all__ = ["Credentials", "Role", "TokenSource", "is_loopback", "require_secure_bind"]

log = logging.getLogger(__name__)


class Role(enum.Enum):
    OPERATOR = "operator"
    INGEST = "ingest"


class TokenSource:
    """A bearer token, from a literal or from a file re-read when it changes."""

    def __init__(self, token: str | None = None, path: Path | None = None) -> None:
        self._literal = token or None
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._cached: str | None = None
        self._lock = threading.Lock()
        if path is not None:
            self.current()  # a missing or empty file fails at start, not at the first call

    @property
    def configured(self) -> bool:
        return self._literal is not None or self._path is not None

    def current(self) -> str | None:
        if self._path is None:
            return self._literal
        try:
            st = os.stat(self._path)
        except OSError as exc:
            if self._cached is None:
                raise InvalidInput(f"token file {self._path}: {exc.strerror}") from exc
            log.warning("token file %s unreadable (%s); keeping the last token", self._path, exc)
            return self._cached
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                token = self._path.read_text(encoding="utf-8").strip()
                if not token:
                    if self._cached is None:
                        raise InvalidInput(f"token file {self._path} is empty")
                    log.warning("token file %s is empty; keeping the last token", self._path)
                    return self._cached
                self._cached, self._stamp = token, stamp
            return self._cached


@dataclass
class Credentials:
    """The token each role needs, and the certificate subjects that stand in for it."""

    tokens: dict[Role, TokenSource] = field(default_factory=dict)
    #: subject common names of client certificates accepted for each role (mutual TLS)
    subjects: dict[Role, frozenset[str]] = field(default_factory=dict)

    def required(self, role: Role) -> bool:
        source = self.tokens.get(role)
        return (source is not None and source.configured) or bool(self.subjects.get(role))

    def check(
        self, role: Role, metadata: Iterable[tuple[str, Any]], peer: Mapping[str, Any]
    ) -> None:
        """Raise UNAUTHENTICATED unless the call carries ``role``'s credential."""
        if not self.required(role):
            return
        names = self.subjects.get(role)
        if names and names & _certificate_names(peer):
            return
        source = self.tokens.get(role)
        expected = source.current() if source is not None else None
        if expected is not None:
            presented = _bearer(metadata)
            if presented is not None and hmac.compare_digest(presented, expected.encode()):
                return
        raise Unauthenticated(
            f"this call needs the {_TOKEN_NAMES[role]}: send metadata 'authorization: Bearer "
            "<token>'" + (" or present a client certificate allowed for it" if names else "")
        )


_TOKEN_NAMES = {
    Role.OPERATOR: "control token (--control-token, DRIFTGATE_CONTROL_TOKEN)",
    Role.INGEST: "ingest token (--ingest-token, DRIFTGATE_INGEST_TOKEN)",
}


def _bearer(metadata: Iterable[tuple[str, Any]]) -> bytes | None:
    """The token of an ``authorization: Bearer <token>`` header (the scheme in any case)."""
    for key, value in metadata:
        if key == "authorization":
            raw = value.encode() if isinstance(value, str) else bytes(value)
            scheme, _, token = raw.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


def _certificate_names(peer: Mapping[str, Any]) -> set[str]:
    """Verified client-certificate subject names from a gRPC auth context."""
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in peer.get(key, ()):
            names.add(value.decode() if isinstance(value, bytes) else str(value))
    return names


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secure_bind(process: str, host: str, missing: Sequence[str], insecure: bool) -> None:
    """Refuse to serve beyond loopback without credentials, unless the operator insists.

    ``missing`` names the credentials that are not configured; with ``insecure`` the
    process starts anyway and says so in the log, every start.
    """
    if not missing or is_loopback(host):
        return
    what = ", ".join(missing)
    if insecure:
        log.warning(
            "%s: listening on %s without %s (--insecure): anyone who reaches the port can "
            "call what those credentials guard",
            process,
            host,
            what,
        )
        return
    raise SystemExit(
        f"driftgate {process}: refusing to listen on {host} without {what}; set them "
        "(see SECURITY.md), bind to 127.0.0.1, or pass --insecure to accept the risk"
    )

"""What a driftgate server or client needs to be reached safely: TLS, tokens, their flags.

Every server (``serve``, ``monitor``) takes the same flags: ``--tls-cert``, ``--tls-key``,
``--tls-client-ca`` for TLS and mutual TLS; ``--control-token[-file]`` (operator) and
``--ingest-token[-file]`` (statistics and labels) for the calls that change or feed state;
``--operator-subjects`` / ``--ingest-subjects`` for client certificates that stand in for
those tokens; ``--insecure`` to serve beyond loopback without them. Every client of ours
takes ``--<peer>-tls-ca``, ``--<peer>-tls-cert``, ``--<peer>-tls-key``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftgate.core.auth import Credentials, Role, TokenSource, require_secure_bind
from driftgate.core.cli import add_token_flags, env
from driftgate.core.tls import ClientTLS, ServerTLS

__all__ = [
    "ServerSecurity",
    "add_client_tls_flags",
    "add_server_security_flags",
    "client_tls",
    "server_security",
]


@dataclass(frozen=True)
class ServerSecurity:
    """TLS and credentials of one listener."""

    #: certificate, key and (for mutual TLS) client CA; None serves plaintext
    tls: ServerTLS | None = None
    #: the operator token, or a file holding it (re-read when it changes)
    control_token: str | None = field(default=None, repr=False)
    control_token_file: Path | None = None
    #: the ingest token (statistics, records, labels), or a file holding it
    ingest_token: str | None = field(default=None, repr=False)
    ingest_token_file: Path | None = None
    #: client-certificate subject names accepted instead of each token (mutual TLS)
    operator_subjects: tuple[str, ...] = ()
    ingest_subjects: tuple[str, ...] = ()
    #: serve beyond loopback without credentials (a warning at every start)
    insecure: bool = False

    def credentials(self) -> Credentials:
        return Credentials(
            tokens={
                Role.OPERATOR: TokenSource(self.control_token, self.control_token_file),
                Role.INGEST: TokenSource(self.ingest_token, self.ingest_token_file),
            },
            subjects={
                Role.OPERATOR: frozenset(self.operator_subjects),
                Role.INGEST: frozenset(self.ingest_subjects),
            },
        )

    def check_bind(self, process: str, host: str, roles: tuple[Role, ...]) -> None:
        """Refuse (SystemExit) to listen beyond loopback without the credentials of ``roles``."""
        credentials = self.credentials()
        flags = {Role.OPERATOR: "--control-token", Role.INGEST: "--ingest-token"}
        missing = [
            f"the {role.value} token ({flags[role]})"
            for role in roles
            if not credentials.required(role)
        ]
        require_secure_bind(process, host, missing, self.insecure)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def add_server_security_flags(add: Any, operator: str, ingest: str) -> None:
    """The TLS and credential flags of a server; ``operator`` and ``ingest`` say what each
    token guards on this server."""
    add("--tls-cert", default=env("TLS_CERT", ""), help="PEM certificate chain; "
        "turns TLS on (DRIFTGATE_TLS_CERT; reloaded when the file changes)")  # fmt: skip
    add("--tls-key", default=env("TLS_KEY", ""), help="PEM private key of "
        "--tls-cert (DRIFTGATE_TLS_KEY)")  # fmt: skip
    add("--tls-client-ca", default=env("TLS_CLIENT_CA", ""), help="PEM CA that "
        "client certificates must chain to: mutual TLS (DRIFTGATE_TLS_CLIENT_CA)")  # fmt: skip
    add_token_flags(add, "control", "operator token", operator, reread=True)
    add_token_flags(add, "ingest", "ingest token", ingest, reread=True)
    add("--operator-subjects", default=env("OPERATOR_SUBJECTS", ""), help="client-certificate "
        "common names let in as operators under mutual TLS, comma-separated "
        "(DRIFTGATE_OPERATOR_SUBJECTS)")  # fmt: skip
    add("--ingest-subjects", default=env("INGEST_SUBJECTS", ""), help="client-certificate "
        "common names let in to report and send labels under mutual TLS "
        "(DRIFTGATE_INGEST_SUBJECTS)")  # fmt: skip
    add("--insecure", action="store_true", default=env("INSECURE", False), help="serve beyond "
        "loopback without credentials (DRIFTGATE_INSECURE); refused otherwise")  # fmt: skip


def server_security(args: argparse.Namespace) -> ServerSecurity:
    cert, key, ca = (Path(p) if str(p) else None for p in (args.tls_cert, args.tls_key,
                                                            args.tls_client_ca))  # fmt: skip
    if (cert is None) != (key is None):
        raise SystemExit(f"driftgate {args.command}: --tls-cert and --tls-key go together")
    if ca is not None and cert is None:
        raise SystemExit(f"driftgate {args.command}: --tls-client-ca needs --tls-cert")
    tls = ServerTLS(cert, key, ca) if cert is not None and key is not None else None
    security = ServerSecurity(
        tls=tls,
        control_token=args.control_token or None,
        control_token_file=args.control_token_file,
        ingest_token=args.ingest_token or None,
        ingest_token_file=args.ingest_token_file,
        operator_subjects=_names(args.operator_subjects),
        ingest_subjects=_names(args.ingest_subjects),
        insecure=bool(args.insecure),
    )
    try:
        security.credentials()  # a missing or empty token file fails here, at start
    except Exception as exc:
        raise SystemExit(f"driftgate {args.command}: {exc}") from exc
    return security


def add_client_tls_flags(add: Any, prefix: str, peer: str) -> None:
    """``--<prefix>tls-ca``, ``--<prefix>tls-cert``, ``--<prefix>tls-key`` for reaching ``peer``.

    Without a prefix (the operator commands) the variables are DRIFTGATE_CLIENT_TLS_*, apart
    from a server's own DRIFTGATE_TLS_* in the same environment.
    """
    name = prefix.upper().replace("-", "_") or "CLIENT_"
    add(f"--{prefix}tls-ca", default=env(f"{name}TLS_CA", ""), help=f"PEM CA of "
        f"{peer}'s certificate; turns TLS on (DRIFTGATE_{name}TLS_CA)")  # fmt: skip
    add(f"--{prefix}tls-cert", default=env(f"{name}TLS_CERT", ""), help="PEM client "
        f"certificate for mutual TLS with {peer} (DRIFTGATE_{name}TLS_CERT)")  # fmt: skip
    add(f"--{prefix}tls-key", default=env(f"{name}TLS_KEY", ""), help="PEM key of "
        f"the client certificate (DRIFTGATE_{name}TLS_KEY)")  # fmt: skip


def client_tls(args: argparse.Namespace, prefix: str = "") -> ClientTLS | None:
    """The client TLS the flags ask for, or None for plaintext."""
    attr = prefix.replace("-", "_")
    ca, cert, key = (
        Path(p) if str(p) else None
        for p in (
            getattr(args, f"{attr}tls_ca"),
            getattr(args, f"{attr}tls_cert"),
            getattr(args, f"{attr}tls_key"),
        )
    )
    if (cert is None) != (key is None):
        raise SystemExit(f"--{prefix}tls-cert and --{prefix}tls-key go together")
    if ca is None and cert is None:
        return None
    return ClientTLS(ca, cert, key)

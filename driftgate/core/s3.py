"""The S3 boundary of the object-store repository: URLs, the connection, the calls, the errors.

Every call to the store is one of the functions below, made inside ``translated``: errors of
the store become this project's errors naming the URL (a missing bucket, access denied, a store
that does not answer), while "not found" and the outcomes of conditional requests pass through
for the repository to decide on. obstore is imported on first use: without the ``s3`` extra,
only an ``s3://`` repository fails, with the command that installs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from driftgate.core.errors import FailedPrecondition, InvalidInput, Unavailable

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = [
    "SCHEME",
    "bucket_and_prefix",
    "connect",
    "default_cache",
    "get_with_meta",
    "head_signature",
    "list_dirs",
    "put",
    "repository_location",
    "translated",
]

SCHEME = "s3://"
Signature = tuple[tuple[int, int], ...]


def repository_location(text: str) -> Path | str:
    """The ``--repository`` value: an ``s3://`` URL kept as it is, else a directory."""
    if text.startswith(SCHEME):
        try:
            bucket_and_prefix(text)
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text.rstrip("/")
    return Path(text)


def bucket_and_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise InvalidInput(f"repository {url!r}: expected s3://BUCKET[/PREFIX] with a valid bucket")
    return bucket, prefix.strip("/")


def default_cache() -> Path:
    named = os.environ.get("DRIFTGATE_REPOSITORY_CACHE")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "driftgate"


def connect(url: str, bucket: str, prefix: str) -> S3Store:
    try:
        from obstore.store import S3Store
    except ImportError:
        raise InvalidInput(
            f"repository {url}: object storage needs the s3 extra (pip install 'driftgate[s3]')"
        ) from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    # Bounded: a store that does not answer is an error within seconds, not a hung watcher.
    return S3Store(
        bucket,
        prefix=prefix or None,
        config={"endpoint": endpoint} if endpoint else None,
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": dt.timedelta(seconds=5),
            "timeout": dt.timedelta(seconds=60),
        },
        retry_config={"max_retries": 3, "retry_timeout": dt.timedelta(seconds=15)},
    )


# -- obstore calls, kept apart so that ``_call`` translates each one's errors ---------------


def list_dirs(store: S3Store, prefix: str | None) -> tuple[list[str], dict[str, str | None]]:
    """Child prefixes (last part) and objects (last part -> ETag) directly under ``prefix``."""
    import obstore

    result = obstore.list_with_delimiter(store, prefix)
    dirs = [p.rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"]]
    objects = {o["path"].rsplit("/", 1)[-1]: o["e_tag"] for o in result["objects"]}
    return dirs, objects


def get_with_meta(
    store: S3Store, key: str, options: dict[str, Any] | None
) -> tuple[bytes, str | None]:
    import obstore

    result = obstore.get(store, key, options=options)  # type: ignore[arg-type]
    return bytes(result.bytes()), result.meta["e_tag"]


def put(store: S3Store, key: str, data: bytes, mode: Any) -> str | None:
    import obstore

    return obstore.put(store, key, data, mode=mode)["e_tag"]


def head_signature(store: S3Store, key: str) -> Signature:
    import obstore

    meta = obstore.head(store, key)
    stamp = int(meta["last_modified"].timestamp() * 1e9)
    return ((stamp, int(meta["size"])), (0, 0))


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Errors of the store as this project's errors, naming the URL; FileNotFoundError and
    the conditional-request outcomes pass through for the caller to decide."""
    from obstore import exceptions as ox

    try:
        yield
    except (FileNotFoundError, ox.NotModifiedError, ox.AlreadyExistsError, ox.PreconditionError):
        raise
    except (ox.PermissionDeniedError, ox.UnauthenticatedError) as exc:
        _refused(where, exc)
    except ox.BaseError as exc:
        _failed(where, exc)


def _refused(where: str, exc: Exception) -> NoReturn:
    raise FailedPrecondition(
        f"{where}: access denied by the object store; check AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY and the bucket's policy"
    ) from exc


def _failed(where: str, exc: Exception) -> NoReturn:
    text = str(exc)
    if "NoSuchBucket" in text:
        raise FailedPrecondition(f"{where}: the bucket does not exist") from exc
    if any(code in text for code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNot")):
        _refused(where, exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    raise Unavailable(f"{where}: the object store did not answer as expected: {first}") from exc

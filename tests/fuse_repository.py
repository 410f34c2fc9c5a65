"""A repository directory seen through FUSE whose listings can be made to fail with EIO.

``python -m tests.fuse_repository SOURCE MOUNTPOINT SWITCH`` mirrors SOURCE at MOUNTPOINT,
read-only (a gateway only reads its repository), until unmounted; while the file SWITCH
exists every directory listing fails with EIO, as on a network or FUSE filesystem that lost
its backend, while files already found can still be read. ``failing_listings`` runs it for a
test and skips the test, with the reason, where FUSE cannot mount (no /dev/fuse, no libfuse 3,
no mfusepy, or a container without the right to mount).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
_STAT_FIELDS = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size")


def _operations(source: str, switch: str) -> Any:
    import mfusepy as fuse

    class Mirror(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            stat = os.lstat(source + path)
            fields = {name: getattr(stat, name) for name in (*_STAT_FIELDS, "st_uid")}
            for name in ("st_atime", "st_ctime", "st_mtime"):
                fields[name] = getattr(stat, name + "_ns")
            return fields

        def readdir(self, path: str, fh: int) -> list[str]:
            if os.path.exists(switch):
                raise fuse.FuseOSError(errno.EIO)
            return [".", "..", *os.listdir(source + path)]

        def open(self, path: str, flags: int) -> int:
            return os.open(source + path, os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

    return Mirror()


def _unavailable() -> str | None:
    """Why FUSE cannot be tried here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse in this container"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian: apt-get install fuse3 libfuse3-3)"
    try:
        import mfusepy  # noqa: F401
    except ImportError as error:
        return f"mfusepy is not installed (the dev extra): {error}"
    except OSError as error:  # mfusepy loads libfuse when imported
        return f"mfusepy cannot load libfuse (Debian: apt-get install libfuse3-3): {error}"
    return None


@contextlib.contextmanager
def failing_listings(source: Path, mountpoint: Path) -> Iterator[Path]:
    """Mount ``source`` at ``mountpoint``; yields the switch file: create it to make listings
    fail with EIO, delete it to make them work again."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    mountpoint.mkdir(parents=True, exist_ok=True)
    switch = mountpoint.parent / f"{mountpoint.name}.fail-listings"
    log = mountpoint.parent / f"{mountpoint.name}.fuse.log"
    with log.open("wb") as output:
        argv = [sys.executable, "-m", "tests.fuse_repository", str(source), str(mountpoint)]
        server = subprocess.Popen([*argv, str(switch)], cwd=ROOT, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"FUSE cannot mount here: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)
        yield switch
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def main() -> None:
    import mfusepy as fuse

    source, mountpoint, switch = sys.argv[1:4]
    # No kernel caching of names or attributes: every scan reaches the listing (and its
    # failure), and a file written to the source is seen at once.
    options = {"entry_timeout": 0, "attr_timeout": 0, "negative_timeout": 0}
    fuse.FUSE(_operations(source, switch), mountpoint, foreground=True, ro=True, **options)


if __name__ == "__main__":
    main()

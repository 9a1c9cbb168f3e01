"""Resumable, verified, atomic downloads over HTTP(S) with urllib (no extra dependencies).

A file ``F`` is fetched into ``F.part``; an existing ``F.part`` is resumed with an HTTP
``Range: bytes=N-`` request (a server that answers 200 instead of 206 restarts it from zero). Only
when the whole file verifies against its known digest is it renamed to ``F`` with
:func:`os.replace`, so an interrupted transfer never leaves a file that looks complete. A corrupt
download is deleted and the next mirror is tried.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from ngrad.data.errors import DataError

__all__ = [
    "DEFAULT_MIRRORS",
    "MIRROR_ENV",
    "TIMEOUT_S",
    "RemoteFile",
    "fetch_file",
    "resolve_mirrors",
]

MIRROR_ENV = "NGRAD_MIRROR"
TIMEOUT_S = 30.0
_CHUNK = 1 << 16
_USER_AGENT = "ngrad-data/0.1 (+python urllib)"

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
"""dataset -> base URLs tried in order; a file's URL is ``base + file name``."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its name (on the mirror and on disk) and its expected digest.

    With ``gunzip=True`` the digest is of the decompressed bytes (any mirror's ``.gz`` verifies).
    """

    name: str
    algorithm: str
    digest: str
    gunzip: bool = False

    def problem(self, path: Path) -> str | None:
        """Return None if ``path`` verifies, else a description naming expected and actual."""
        what = f"{self.algorithm} of the decompressed bytes" if self.gunzip else self.algorithm
        hasher = hashlib.new(self.algorithm, usedforsecurity=False)
        try:
            opener = gzip.open if self.gunzip else Path.open
            with opener(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            if not self.gunzip:
                raise
            return f"{what}: expected {self.digest}, got no digest (not a valid gzip file: {exc})"
        actual = hasher.hexdigest()
        if actual == self.digest.lower():
            return None
        return f"{what}: expected {self.digest}, got {actual}"


class _TransferError(Exception):
    """A transfer failed (short read, bad resume); any ``.part`` is kept for a later resume."""


def resolve_mirrors(dataset: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """Return the base URLs to try: ``mirrors`` if given, else ``$NGRAD_MIRROR``, else defaults.

    ``$NGRAD_MIRROR`` holds one or more base URLs separated by commas or whitespace.
    """
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    if mirrors is not None:
        chosen = [m for m in mirrors if m]
    else:
        env = os.environ.get(MIRROR_ENV, "").strip()
        chosen = [m for m in re.split(r"[\s,]+", env) if m]
        chosen = chosen or list(DEFAULT_MIRRORS.get(dataset, ()))
    if not chosen:
        raise DataError(f"{dataset}: no download mirror known; pass mirrors or set ${MIRROR_ENV}")
    return chosen


def _join(base: str, name: str) -> str:
    return base if base.endswith("/" + name) else base.rstrip("/") + "/" + name


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", header or "")
    return int(match.group(1)) if match else None


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> bool:
    """Download ``url`` into ``part``, resuming it if it exists; return True if it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the .part is not a prefix we can resume: start over
            part.unlink()
            return _transfer(url, part, progress=progress, timeout=timeout)
        raise _TransferError(f"HTTP {exc.code} {exc.reason}") from None
    with response:
        status = getattr(response, "status", None) or 200
        resumed = bool(offset) and status == 206
        if resumed and _content_range_start(response.headers.get("Content-Range")) != offset:
            part.unlink()
            raise _TransferError("server resumed at the wrong offset; discarded the partial file")
        if not resumed:
            offset = 0  # full body (e.g. 200 to a Range request): restart the file
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        with (
            part.open("ab" if resumed else "wb") as sink,
            tqdm(
                total=None if length is None else offset + length,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                sink.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            sink.flush()
            os.fsync(sink.fileno())
    if length is not None and received < length:
        raise _TransferError(
            f"connection closed after {offset + received} of {offset + length} bytes; "
            f"kept {part.name} to resume"
        )
    return resumed


def fetch_file(
    remote: RemoteFile,
    dest_dir: Path,
    mirrors: Sequence[str],
    *,
    dataset: str,
    progress: bool = False,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``remote`` into ``dest_dir`` from the first mirror that serves a verified copy.

    Returns the final path. Raises :class:`DataError` listing what went wrong on each mirror.
    """
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dataset}: cannot create {dest_dir}: {exc.strerror or exc}") from exc
    dest = dest_dir / remote.name
    part = dest_dir / f"{remote.name}.part"
    problems: list[str] = []
    for base in mirrors:
        url = _join(base, remote.name)
        try:
            resumed = _transfer(url, part, progress=progress, timeout=timeout)
            problem = remote.problem(part)
            if problem and resumed:  # the resumed prefix may come from another copy: redo it
                part.unlink()
                _transfer(url, part, progress=progress, timeout=timeout)
                problem = remote.problem(part)
        except (_TransferError, URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            problems.append(f"{url}: {reason}")
            continue
        if problem:
            part.unlink(missing_ok=True)
            problems.append(f"{url}: corrupt download of {remote.name} deleted ({problem})")
            continue
        part.replace(dest)
        return dest
    details = "\n  - ".join(problems)
    raise DataError(f"{dataset}: could not download {remote.name} into {dest_dir}:\n  - {details}")

"""Known-good digests of the dataset files, and the hashing helpers that check them.

The tables are plain module-level dicts so that tests (and users with a private mirror of other
data) can put their own digests in, e.g. with ``monkeypatch.setitem(IDX_SHA256["mnist"], ...)``.

IDX digests are SHA-256 of the DECOMPRESSED bytes: they hold for the raw files and for any
``.gz`` of them, whatever the compressor (mirrors' ``.gz`` bytes differ from each other).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["CIFAR10_ARCHIVE_MD5", "IDX_SHA256", "file_digest"]

IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        ),
        "train-labels-idx1-ubyte": (
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        ),
        "t10k-images-idx3-ubyte": (
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        ),
        "t10k-labels-idx1-ubyte": (
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
    },
}
"""dataset -> IDX file stem (no ``.gz``) -> SHA-256 of the decompressed file."""

CIFAR10_ARCHIVE_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
}
"""archive name -> MD5 of the archive bytes as published by the CIFAR-10 authors."""


def file_digest(path: Path, algorithm: str) -> str:
    """Return the hex digest of the bytes of ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

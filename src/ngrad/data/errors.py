"""The one exception type of the data package."""

from __future__ import annotations

from ngrad.errors import NgradError

__all__ = ["DataError"]


class DataError(NgradError):
    """A dataset is unknown, missing, corrupt or could not be downloaded.

    The message is meant to be shown to a user as is: it names the dataset and file, says what is
    wrong and, for missing files, where the loader looked and how to fix it.
    """

"""The one error type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Input data is missing, unreadable or not what the layout promises.

    The message always names the file (local path or ``gs://`` URI) and what was expected.
    """

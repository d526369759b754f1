"""Ctrl-C honoured in every stage.

:func:`install` makes SIGINT both raise ``KeyboardInterrupt`` (as Python does) and set a flag,
so that an interrupt that some library swallows is still seen: :func:`check` raises it again
before the outputs are swapped in, and the command line exits 130 on either.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODE = 130
"""The shell's exit status for a process ended by SIGINT (128 + 2)."""

_interrupted = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through the flag (main thread only; elsewhere a no-op) and clear it."""
    _interrupted.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def interrupted() -> bool:
    """Whether SIGINT arrived since :func:`install`."""
    return _interrupted.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived, even if its first raise was swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt

"""PNG figures kept on disk under the hash of what drew them, so a rerun re-encodes only
the figures whose inputs (or drawing code) changed.

A figure's key is the drawing function's qualified name, the bytes of its module's source
file and the pickled arguments (arrays, strings, numbers, frozen results): the same inputs
draw the same picture, so reading it back is exact. Entries are written atomically; a
damaged one is redrawn.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from domain_gap.atomic import write_atomic

__all__ = ["FigureCache"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@cache
def _source_digest(module_file: str) -> str:
    return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()


class FigureCache:
    """``cache(draw, *args, **kwargs)`` = ``draw(*args, **kwargs)`` (PNG bytes), memoised in
    ``root`` (``None``: always draw). ``hits``/``misses`` count what a run reused."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0

    def _key(self, draw: Callable[..., bytes], args: tuple, kwargs: dict) -> str:
        module_file = inspect.getsourcefile(draw) or ""
        h = hashlib.sha256(f"{draw.__module__}.{draw.__qualname__}".encode())
        h.update(_source_digest(module_file).encode() if module_file else b"")
        h.update(pickle.dumps((args, sorted(kwargs.items())), protocol=5))
        return h.hexdigest()[:40]

    def __call__(self, draw: Callable[..., bytes], *args: Any, **kwargs: Any) -> bytes:
        if self.root is None:
            return draw(*args, **kwargs)
        path = self.root / f"{self._key(draw, args, kwargs)}.png"
        try:
            data = path.read_bytes()
            if data.startswith(PNG_MAGIC):
                self.hits += 1
                return data
        except OSError:
            pass
        data = draw(*args, **kwargs)
        write_atomic(path, data)
        self.misses += 1
        return data

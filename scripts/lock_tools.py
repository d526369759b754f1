"""Keep ``poetry.lock`` valid for PyPI's default source while pip does the installing.

Poetry's default source uses PyPI's JSON API; where that is unreachable a lock can be resolved
through a simple-index source instead. ``normalize`` removes the ``[package.source]`` blocks
that such a source leaves and recomputes the content-hash for the committed pyproject, which is
exactly what a default-source lock holds. ``requirements`` writes the locked set as pip
requirements (name==version; markers kept) so that pip installs what the lock pins; a package
locked at several versions under different markers is left to pip (torch pins those exactly).

Usage:
    python scripts/lock_tools.py normalize poetry.lock pyproject.toml   (needs poetry importable)
    python scripts/lock_tools.py requirements poetry.lock [EXTRA ...] > requirements.txt

Optional packages (``extra == "name"`` markers) are installed only for the extras named.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def normalize(lock_path: Path, pyproject: Path) -> None:
    """Drop [package.source] blocks and set the content-hash for ``pyproject``."""
    from poetry.factory import Factory

    text = lock_path.read_text(encoding="utf-8")
    text = re.sub(r"\n\[package\.source\]\n(?:[a-z_]+ = .*\n)+", "\n", text)
    poetry = Factory().create_poetry(pyproject.parent)
    content_hash = poetry.locker._get_content_hash()
    text, n = re.subn(r'content-hash = "[0-9a-f]+"', f'content-hash = "{content_hash}"', text)
    if n != 1:
        raise SystemExit(f"{lock_path}: expected one content-hash line, found {n}")
    lock_path.write_text(text, encoding="utf-8")


def _extra_marker(marker: str, extras: frozenset[str]) -> str | None:
    """``marker`` with each ``extra == "x"`` decided by ``extras``; None: never installed.

    Poetry writes an extra-only package's marker as a bare ``extra == "x"`` clause, which
    pip cannot evaluate from a requirements file; it is decided here instead.
    """
    clause = re.compile(r'extra == "([A-Za-z0-9_.-]+)"')
    found = clause.findall(marker)
    if not found:
        return marker
    if clause.fullmatch(marker.strip()):
        return "" if found[0] in extras else None
    raise SystemExit(f"lock_tools: cannot decide the marker {marker!r}; extend _extra_marker")


def _markers(pkg: dict, extras: frozenset[str]) -> str | None:
    """The package's install marker ("" = always, None = not for this install)."""
    markers = pkg.get("markers")
    if isinstance(markers, dict):  # per group; a locked group without an entry is unconditional
        if any(group not in markers for group in pkg.get("groups", [])):
            return ""
        decided = [_extra_marker(m, extras) for m in markers.values()]
        kept = [m for m in decided if m is not None]
        if not kept:
            return None
        return "" if "" in kept else " or ".join(f"({m})" for m in kept)
    return _extra_marker(markers, extras) if markers else ""


def requirements(lock_path: Path, extras: frozenset[str] = frozenset()) -> str:
    """The locked packages as pip requirement lines, with their environment markers."""
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    names = [pkg["name"] for pkg in lock["package"]]
    lines = []
    for pkg in lock["package"]:
        if names.count(pkg["name"]) > 1:
            # Locked twice under disjoint markers (torch's CUDA wheels): the exact pins in
            # torch's own metadata decide, so pip resolves these itself.
            continue
        markers = _markers(pkg, extras)
        if markers is None:
            continue
        line = f"{pkg['name']}=={pkg['version']}"
        if markers:
            line += f" ; {markers}"
        lines.append(line)
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "normalize":
        normalize(Path(argv[1]), Path(argv[2] if len(argv) > 2 else "pyproject.toml"))
    elif len(argv) >= 2 and argv[0] == "requirements":
        sys.stdout.write(requirements(Path(argv[1]), frozenset(argv[2:])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

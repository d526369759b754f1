"""Keep ``poetry.lock`` valid for PyPI's default source while pip does the installing.

Poetry's default source uses PyPI's JSON API; where that is unreachable a lock can be resolved
through a simple-index source instead. ``normalize`` removes the ``[package.source]`` blocks
that such a source leaves and recomputes the content-hash for the committed pyproject, which is
exactly what a default-source lock holds. ``requirements`` writes the locked set as pip
requirements (name==version; markers kept) so that pip installs what the lock pins; a package
locked at several versions under different markers is left to pip (torch pins those exactly).

Usage:
    python scripts/lock_tools.py normalize poetry.lock pyproject.toml   (needs poetry importable)
    python scripts/lock_tools.py requirements poetry.lock > requirements.txt
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


def requirements(lock_path: Path) -> str:
    """The locked packages as pip requirement lines, with their environment markers."""
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    names = [pkg["name"] for pkg in lock["package"]]
    lines = []
    for pkg in lock["package"]:
        if names.count(pkg["name"]) > 1:
            # Locked twice under disjoint markers (torch's CUDA wheels): the exact pins in
            # torch's own metadata decide, so pip resolves these itself.
            continue
        line = f"{pkg['name']}=={pkg['version']}"
        markers = pkg.get("markers")
        if isinstance(markers, dict):  # per-group markers: any group suffices
            markers = " or ".join(f"({m})" for m in markers.values())
        if markers:
            line += f" ; {markers}"
        lines.append(line)
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "normalize":
        normalize(Path(argv[1]), Path(argv[2] if len(argv) > 2 else "pyproject.toml"))
    elif len(argv) == 2 and argv[0] == "requirements":
        sys.stdout.write(requirements(Path(argv[1])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

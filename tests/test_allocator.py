"""The allocator setting: after it, a freed large block is reused without new page faults.

Each case runs in a fresh interpreter: the setting is process-wide and would otherwise leak
into the rest of the suite's process (and be already set by an earlier test's model load).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A forward pass in miniature: hold four large float32 tensors (above glibc's largest dynamic
# mmap threshold, 32 MB), free them, repeat; count each round's minor page faults and the peak
# RSS after it. Torch tensors: its CPU allocator is what the forward uses (numpy asks for huge
# pages, which hides the cost).
_MEGABYTES = (48, 80, 40, 64)
_ROUNDS = 16
_PROBE = f"""
import json, resource, sys
import torch
took = None
if sys.argv[1] == "tuned":
    from domain_gap.allocator import keep_freed_blocks
    took = keep_freed_blocks()
rounds = []
for _ in range({_ROUNDS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.ones(mb << 18) for mb in {_MEGABYTES}]
    del held
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rounds.append((usage.ru_minflt - before, usage.ru_maxrss))
print(json.dumps({{"took": took, "rounds": rounds}}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, tuned = _probe("default"), _probe("tuned")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        assert tuned["took"] is False  # nothing to tune: says so, changes nothing
        return
    pages = (sum(_MEGABYTES) << 20) // 4096
    assert tuned["took"] is True
    late = slice(_ROUNDS // 2, None)  # the second half: after the heap has settled
    # glibc's default maps every round's blocks afresh: each page faults again, every round
    assert all(faults > pages // 2 for faults, _ in default["rounds"][late])
    # tuned: the heap holds the blocks. Where a small allocation pins a freed region the
    # heap grows by a block (a few thousand faults, at random), so compare the late half as
    # a whole: under a tenth of the default's faults (a no-op setting would match it) ...
    late_faults = [sum(faults for faults, _ in run["rounds"][late]) for run in (default, tuned)]
    assert late_faults[1] < late_faults[0] / 10
    # ... and the heap stays bounded: the late half adds less than two rounds' blocks to the
    # peak (a leak would add a round's blocks every round: eight here)
    peaks = [peak for _, peak in tuned["rounds"]]
    assert peaks[-1] - peaks[_ROUNDS // 2 - 1] < 2 * (sum(_MEGABYTES) << 10)  # kB


def test_setting_is_idempotent_and_reports_a_bool() -> None:
    from domain_gap.allocator import keep_freed_blocks

    first = keep_freed_blocks()
    assert isinstance(first, bool)
    assert keep_freed_blocks() is first

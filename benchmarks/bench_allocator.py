"""What :func:`domain_gap.allocator.keep_freed_blocks` buys: P1's two passes with glibc's
default malloc settings and with the tuned ones, each in a fresh process.

``TL_DISABLE_ANALYTICS=true .venv/bin/python benchmarks/bench_allocator.py [--repeats 2]``
(about 4 minutes on 2 cores)

Per setting: the bare forward and the extraction (ms an image, medians of ``repeats``), the
minor page faults and kernel CPU time an image over both passes, and the process's peak RSS.
Goals for keeping the setting: the extraction ≥ 1.1x faster tuned, the peak RSS ≤ 1.25x.
The two processes run one after the other, so a load that changes in between moves one side:
compare within a quiet hour, and rerun when the two bare passes disagree with the page faults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")

SPEED_GOAL, MEMORY_GOAL = 1.1, 1.25

# The child: P1's measurement, with the setting switched off in "default" mode (load_runner
# applies it), and the process's page faults, kernel time and peak RSS around it.
_CHILD = """
import json, resource, sys
sys.path.insert(0, "benchmarks")
import domain_gap.analysis.extract as extract
if sys.argv[1] == "default":
    extract.keep_freed_blocks = lambda: False
from run import p1_extraction
before = resource.getrusage(resource.RUSAGE_SELF)
fig = p1_extraction(repeats=int(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF)
images = fig["images"] * int(sys.argv[2]) * 2  # both passes (the warm-up and decoding in too)
print(json.dumps({
    "bare_ms": 1000 / fig["bare_images_per_s"],
    "extract_ms": 1000 / fig["extract_images_per_s"],
    "p1": fig["value"],
    "faults_per_image": (after.ru_minflt - before.ru_minflt) / images,
    "sys_ms_per_image": 1000 * (after.ru_stime - before.ru_stime) / images,
    "peak_mib": after.ru_maxrss / 1024,
}))
"""


def _child(mode: str, repeats: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(repeats)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"load average {[round(x, 2) for x in os.getloadavg()]}, {os.cpu_count()} cpus")
    runs = {mode: _child(mode, args.repeats) for mode in ("default", "tuned")}
    head = ("bare ms", "extract ms", "P1", "faults", "sys ms", "MiB")
    print(
        f"{'':<8} " + " ".join(f"{h:>{w}}" for h, w in zip(head, (8, 10, 6, 8, 7, 6), strict=True))
    )
    for mode, r in runs.items():
        print(
            f"{mode:<8} {r['bare_ms']:>8.1f} {r['extract_ms']:>10.1f} {r['p1']:>6.3f} "
            f"{r['faults_per_image']:>8.0f} {r['sys_ms_per_image']:>7.1f} {r['peak_mib']:>6.0f}"
        )
    d, t = runs["default"], runs["tuned"]
    speed = d["extract_ms"] / t["extract_ms"]
    memory = t["peak_mib"] / d["peak_mib"]
    print(f"bare forward      {d['bare_ms'] / t['bare_ms']:.2f}x faster tuned")
    print(
        f"extraction        {speed:.2f}x faster tuned   goal >= {SPEED_GOAL}x   "
        f"{'pass' if speed >= SPEED_GOAL else 'MISS'}"
    )
    print(
        f"peak RSS          {memory:.2f}x tuned          goal <= {MEMORY_GOAL}x  "
        f"{'pass' if memory <= MEMORY_GOAL else 'MISS'}"
    )


if __name__ == "__main__":
    main()

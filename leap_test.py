"""``poetry run test``: validate the Tensorleap integration locally, as the platform would.

1. code-loader's own ``LeapLoader(...).check_dataset()`` under ``IS_TENSORLEAP_PLATFORM=true``
   (in a child process, so platform mode cannot leak into step 2);
2. the ``@tensorleap_integration_test`` on several samples of every subset and every domain.

Exits non-zero with the failing function's message when anything fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENTRY = "leap_binder.py"
SAMPLES_PER_DOMAIN = 2


class IntegrationError(RuntimeError):
    """A registered function, or the platform check, failed."""


def platform_check() -> dict:
    """Run ``check_dataset`` in this process (the caller sets IS_TENSORLEAP_PLATFORM)."""
    from code_loader.leaploader import LeapLoader

    result = LeapLoader(str(ROOT), ENTRY).check_dataset()
    failed = {p.name: p.display for p in result.payloads if not p.is_passed}
    return {
        "is_valid": bool(result.is_valid),
        "general_error": result.general_error,
        "failed": {name: {k: str(v) for k, v in shown.items()} for name, shown in failed.items()},
        "payloads": [p.name for p in result.payloads],
        "metadata": [m.name for m in result.setup.metadata] if result.setup else [],
    }


def run_platform_check() -> dict:
    """``platform_check`` in a child process with ``IS_TENSORLEAP_PLATFORM=true``."""
    env = {**os.environ, "IS_TENSORLEAP_PLATFORM": "true", "TL_DISABLE_ANALYTICS": "true"}
    code = "import json, leap_test; print('@@' + json.dumps(leap_test.platform_check()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    if proc.returncode != 0 or not lines:
        raise IntegrationError(f"check_dataset crashed:\n{proc.stderr.strip()[-4000:]}")
    report = json.loads(lines[-1][2:])
    if not report["is_valid"]:
        details = report["general_error"] or json.dumps(report["failed"], indent=2)
        raise IntegrationError(f"check_dataset (platform mode) is not valid:\n{details}")
    return report


def _pick(sample_ids: Iterable[str], per_domain: int) -> list[str]:
    """The first ``per_domain`` ids of each domain (ids start with '<domain>/')."""
    picked: dict[str, list[str]] = {}
    for sid in sample_ids:
        bucket = picked.setdefault(sid.split("/", 1)[0], [])
        if len(bucket) < per_domain:
            bucket.append(sid)
    return [sid for ids in picked.values() for sid in ids]


def run_integration_tests(per_domain: int = SAMPLES_PER_DOMAIN) -> list[tuple[str, str]]:
    """The integration test on ``per_domain`` samples of each domain in every subset."""
    import leap_binder

    subsets = list(leap_binder.preprocess())
    if leap_binder.source.subset_records("unlabeled"):
        subsets.append(leap_binder.unlabeled_preprocess())
    done = []
    for subset in subsets:
        for sid in _pick(subset.sample_ids, per_domain):
            try:
                leap_binder.integration_test(sid, subset)
            except Exception as exc:  # report which sample and function failed
                raise IntegrationError(f"integration test failed on {sid} ({subset.state.name}): "
                                         f"{exc}") from exc
            done.append((subset.state.name, sid))
    return done


def main() -> None:
    """Entry point of ``poetry run test``."""
    from domain_gap.demo import ensure_demo_inputs

    ensure_demo_inputs()
    try:
        report = run_platform_check()
        print(f"check_dataset (IS_TENSORLEAP_PLATFORM=true): valid, {len(report['payloads'])} "
              f"checks passed, {len(report['metadata'])} metadata fields")
        done = run_integration_tests()
    except IntegrationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    states = sorted({state for state, _ in done})
    print(f"integration test passed on {len(done)} samples ({', '.join(states)})")


if __name__ == "__main__":
    main()

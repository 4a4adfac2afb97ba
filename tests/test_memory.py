"""Resident memory stays flat over many detections, good inputs and error paths interleaved
(tools/soak.py; scripts/fuzz.sh runs it for 20,000 iterations). Run in a child process so the
measurement sees only the soak's own allocations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOAK = os.path.join(ROOT, "tools", "soak.py")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("threads", [1, 4])
def test_rss_flat_over_thousands_of_detections(threads):
    proc = subprocess.run(
        [
            sys.executable,
            SOAK,
            "--iterations",
            "4000",
            "--threads",
            str(threads),
            "--max-drift-mib",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[0])
    assert not report["problems"], report
    assert report["drift_mib"] <= 4, report
    assert report["error_fraction"] > 0.3, report

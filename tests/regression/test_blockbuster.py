"""The integration and security suites, run once under blockbuster, find no blocking call on
the loop."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.regression, pytest.mark.timeout(600)]


def test_integration_suite_has_no_blocking_call_on_the_loop() -> None:
    """Every integration test passes with blockbuster watching the loop for app/ and services/."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/integration",
            "tests/security",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.regression.blockbuster_plugin",
        ],
        env={**os.environ, "BLOCKBUSTER": "1"},
        capture_output=True,
        text=True,
        timeout=580,
    )
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    found = [line for line in result.stdout.splitlines() if "Blocking call to" in line]
    assert not found, "\n".join(found)
    assert "blockbuster: blocking calls" not in result.stdout, tail
    # A test that fails only under blockbuster is a blocking call too (one caught and mapped).
    assert result.returncode == 0, tail

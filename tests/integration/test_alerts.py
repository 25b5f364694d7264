"""monitoring/alerts.yml: valid, every rule tested by promtool, every metric it reads exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import Counter, Gauge, Histogram

from services import metrics

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
REQUIRED = {
    "SupaguardLoginUnavailable",
    "SupaguardServiceCredentialFailures",
    "SupaguardHighErrorRate",
    "SupaguardMeLatencyHigh",
    "SupaguardTokenCacheHitRatioLow",
    "SupaguardBreakerOpen",
    "SupaguardPoolSaturated",
    "SupaguardRedisErrors",
    "SupaguardClockSkew",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (scripts/test does it)"
    return found


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exposed_series() -> set[str]:
    """Sample names services.metrics exposes (a counter ``x_total``, a histogram's
    ``_bucket``/``_sum``/``_count``, a gauge as is)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, Counter | Gauge | Histogram):
            continue
        for family in value.describe():
            if isinstance(value, Counter):
                names.add(family.name + "_total")
            elif isinstance(value, Histogram):
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            elif isinstance(value, Gauge):
                names.add(family.name)
    return names


def test_promtool_checks_the_rules_and_every_rule_test_passes() -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_operator_alert_exists_is_tested_and_reads_real_metrics() -> None:
    names = {str(rule["alert"]) for rule in rules()}
    assert names >= REQUIRED, REQUIRED - names
    tests = (MONITORING / "alerts_test.yml").read_text()
    series = exposed_series()
    for rule in rules():
        assert f"alertname: {rule['alert']}" in tests, f"{rule['alert']} has no promtool test"
        used = set(re.findall(r"\bsg_[a-z_]+", str(rule["expr"])))
        assert used, rule["alert"]
        assert used <= series, (rule["alert"], used - series)
        labels = rule.get("labels")
        assert isinstance(labels, dict)
        assert labels.get("severity") in ("page", "warning")

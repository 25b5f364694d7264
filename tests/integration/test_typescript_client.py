"""A TypeScript client generated from /openapi.json (openapi-typescript, called through
openapi-fetch) type-checks the documented flows in tests/typescript/flows.ts: register,
login, refresh, me, sessions, logout, the admin routes and the internal route. Wrong paths,
bodies, query parameters and error codes must fail to compile (``@ts-expect-error``)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.main import create_app
from app.openapi import build_openapi
from tests.conftest import SettingsFactory

NODE_DIR = Path(__file__).resolve().parents[1] / "typescript"
TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "es2022",
        "module": "esnext",
        "moduleResolution": "bundler",
        "lib": ["es2022", "dom"],
        "types": [],
        "noUnusedLocals": True,
        "exactOptionalPropertyTypes": True,
    },
    "files": ["flows.ts"],
}


def node_tools() -> Path:
    """tests/typescript/node_modules, installed from the lock file when missing."""
    bin_dir = NODE_DIR / "node_modules" / ".bin"
    if not (bin_dir / "tsc").exists():
        npm = shutil.which("npm")
        assert npm, "npm is missing: apt-get install nodejs npm (scripts/test does it)"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return bin_dir


def document(make_settings: SettingsFactory) -> dict[str, Any]:
    app = create_app(make_settings(), configure_logs=False)
    return build_openapi(list(app.routes), server_url="https://auth.example.com")


def type_check(spec: dict[str, Any], work: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = node_tools()
    work.mkdir()
    (work / "openapi.json").write_text(json.dumps(spec))
    (work / "node_modules").symlink_to(NODE_DIR / "node_modules")
    shutil.copy(NODE_DIR / "flows.ts", work / "flows.ts")
    (work / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    generated = subprocess.run(
        [str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "api.d.ts"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return subprocess.run(
        [str(bin_dir / "tsc"), "-p", "tsconfig.json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.timeout(300)
def test_generated_client_type_checks_the_documented_flows(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    checked = type_check(document(make_settings), tmp_path / "client")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    generated = (tmp_path / "client" / "api.d.ts").read_text()
    assert '"/api/v1/admin/users/{user_id}/roles"' in generated
    assert '"invalid_service_credentials"' in generated


@pytest.mark.timeout(300)
def test_a_loosely_typed_document_fails_the_check(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """The check has teeth: with `code` a plain string and the admin list's query untyped,
    the lines that must not compile do, and tsc says so."""
    spec = copy.deepcopy(document(make_settings))
    spec["components"]["schemas"]["ErrorCode"] = {"type": "string"}
    for parameter in spec["paths"]["/api/v1/admin/users"]["get"]["parameters"]:
        parameter["schema"] = {}
    checked = type_check(spec, tmp_path / "loose")
    assert checked.returncode != 0
    errors = checked.stdout.splitlines()
    assert all("TS2578" in line for line in errors), checked.stdout  # unused @ts-expect-error
    flows = (NODE_DIR / "flows.ts").read_text().splitlines()
    flagged = {flows[int(line.split("(")[1].split(",")[0])] for line in errors}
    assert any("no_such_code" in line for line in flagged), errors
    assert any("fifty" in line for line in flagged), errors

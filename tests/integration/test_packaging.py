"""Packaging a user expects: a licence that matches, one Python version everywhere, the
``supaguard`` command, a version at runtime, runtime dependencies that are enough (and no
more) to serve, and a container image definition that installs exactly those."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.localauth import LocalAuth, free_port

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Needed at runtime without being imported by name: PyJWT's ES256/RS256 keys.
NOT_IMPORTED = {"cryptography"}
# Only tests (the SDK used as a client, Kong's YAML) or localauth need these.
NOT_RUNTIME = {"bcrypt", "pyyaml", "supabase", "pytest", "schemathesis"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(*packages: str) -> set[str]:
    """Top-level modules imported anywhere under ``packages``."""
    found: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def _distributions(modules: set[str]) -> set[str]:
    """The installed distributions that provide ``modules`` (standard library and our own
    packages provide none)."""
    mapping = packages_distributions()
    ours = {"app", "services", "localauth", "tests", "scripts"}
    dists: set[str] = set()
    for module in modules - ours - set(sys.stdlib_module_names):
        assert module in mapping, f"{module} is imported but no installed package provides it"
        dists |= {d.lower().replace("_", "-") for d in mapping[module]}
    return dists


def test_license_file_matches_pyproject() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_one_python_version_everywhere() -> None:
    pinned = (ROOT / ".python-version").read_text().strip()
    assert pinned == "3.11"
    assert PROJECT["requires-python"] == f">={pinned}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == pinned
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + pinned.replace(".", "")
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == pinned  # what CI runs
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG PYTHON_VERSION={pinned}\n" in dockerfile


def test_runtime_dependencies_are_what_app_and_services_import() -> None:
    runtime = {_name(r) for r in PROJECT["dependencies"]}
    needed = _distributions(_imports("app", "services"))
    assert needed <= runtime, f"imported but not declared: {needed - runtime}"
    assert runtime - needed <= NOT_IMPORTED, f"declared but never imported: {runtime - needed}"
    assert not runtime & NOT_RUNTIME
    localauth = {_name(r) for r in PROJECT["optional-dependencies"]["localauth"]}
    assert _distributions(_imports("localauth")) <= runtime | localauth
    dev = {_name(r) for r in PYPROJECT["dependency-groups"]["dev"]}
    # uvloop comes with uvicorn[standard]; the load test imports it directly.
    assert _distributions(_imports("tests", "scripts")) <= runtime | localauth | dev | {"uvloop"}
    # The bootstrap every script runs installs the extras, so localauth and tests work.
    assert "uv sync --frozen --all-extras" in (ROOT / "scripts/_bootstrap.sh").read_text()


def _supaguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("supaguard")
    assert script.exists(), "the supaguard console script is not installed (uv sync)"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_console_script_version_and_subcommands() -> None:
    assert _supaguard("--version").stdout.strip() == f"supaguard {version('supaguard')}"
    assert version("supaguard") == PROJECT["version"]
    helped = _supaguard("--help")
    assert "serve" in helped.stdout
    assert "diagnose" in helped.stdout
    serve_help = _supaguard("serve", "--help")
    assert serve_help.returncode == 0
    assert "--host" in serve_help.stdout
    bare = _supaguard()
    assert bare.returncode == 2
    assert "COMMAND" in bare.stderr
    # diagnose is app.diagnose: invalid settings are exit 2 with a JSON result naming them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "REDIS_"))}
    diagnosed = _supaguard("diagnose", "--json", env=env)
    assert diagnosed.returncode == 2, diagnosed.stderr
    assert '"name": "settings"' in diagnosed.stdout
    assert "SUPABASE_URL" in diagnosed.stdout


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed with runtime dependencies only, as the Dockerfile does it."""
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    synced = subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--no-editable", "--offline", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synced.returncode == 0, synced.stderr
    return venv


@pytest.mark.timeout(90)
def test_runtime_dependencies_alone_serve_a_login(
    runtime_env: Path, localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """`supaguard serve` from a runtime-only install answers /health/live with its version
    and serves register, login and /me; test-only packages are absent from it."""
    python = runtime_env / "bin" / "python"
    # (PyYAML stays: uvicorn[standard] brings it.)
    for module in ("bcrypt", "supabase", "pytest", "schemathesis"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} is installed at runtime"
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        **app_env(localauth, redis_url, redis_prefix),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(runtime_env / "bin" / "supaguard"), "serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # not the source tree: only the installed package is importable
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                live = httpx.get(base + "/health/live", timeout=0.5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "supaguard serve did not come up"
                time.sleep(0.05)
        assert live.json() == {"status": "ok", "version": PROJECT["version"]}
        body = {"email": new_email(), "password": TEST_PASSWORD}
        assert httpx.post(base + "/api/v1/auth/register", json=body).status_code == 201
        tokens = httpx.post(base + "/api/v1/auth/login", json=body).json()
        me = httpx.get(
            base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.json()["email"] == body["email"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_dockerfile_installs_runtime_only_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = re.findall(r"^RUN uv sync (.*)$", dockerfile, flags=re.M)
    assert syncs
    assert all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert not any("--all-extras" in s or "--extra" in s for s in syncs)
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, flags=re.M):
        assert (ROOT / source).exists(), source
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for package in wheel:
        assert f"COPY {package} ./{package}" in dockerfile
    assert re.search(r"^USER (?!root)\S+", dockerfile, flags=re.M)
    assert "/health/live" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert dockerfile.rstrip().endswith('CMD ["supaguard", "serve"]')
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env", "tests"} <= set(ignored)

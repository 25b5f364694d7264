"""The trigger SQL in docs/supabase-events.md, run for real: PostgreSQL with pgcrypto, and
stand-ins for what only Supabase has (``auth.users``, Vault, ``pg_net``'s ``http_post``,
which queues ``convert_to(body::text, 'UTF8')`` as pg_net does). Every request the trigger
queues is then posted to the service, which must verify and apply it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import EVENTS_SECRET, Target
from tests.support.authz import bearer, signed_in, unverified

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "supabase-events.md"
PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
SEP = "\x1f"

STANDINS = """
create schema extensions;
create schema auth;
create table auth.users (
  id uuid primary key, email text, encrypted_password text,
  banned_until timestamptz, raw_app_meta_data jsonb default '{}'::jsonb
);
create schema vault;
create table vault.decrypted_secrets (name text primary key, decrypted_secret text);
create function vault.create_secret(new_secret text, new_name text) returns uuid
language sql as $$
  insert into vault.decrypted_secrets values (new_name, new_secret);
  select gen_random_uuid();
$$;
create schema net;
create table net.requests (id bigserial primary key, url text, headers jsonb, body bytea);
create function net.http_post(
  url text, body jsonb default '{}'::jsonb, params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint language plpgsql as $$
declare rid bigint;
begin
  insert into net.requests (url, headers, body)
  values (url, headers, convert_to(body::text, 'UTF8')) returning id into rid;
  return rid;
end $$;
"""


def _doc_sql() -> str:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/supabase-events.md should hold one SQL block"
    sql = str(blocks[0]).replace("create extension if not exists pg_net;\n", "")
    assert "v1,whsec_REPLACE_ME" in sql
    return sql.replace("v1,whsec_REPLACE_ME", "v1," + EVENTS_SECRET).replace(
        "https://auth.example.com/api/v1/internal/supabase-events",
        "http://testserver/api/v1/internal/supabase-events",
    )


def _psql(database: str, *args: str) -> str:
    result = subprocess.run(
        [*PG, "-d", database, *args], capture_output=True, text=True, timeout=20, check=False
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    probe = subprocess.run(
        [*PG, "-d", "postgres", "-Atc", "select 1"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {probe.stderr.strip()}")
    name = f"sgtest_{uuid.uuid4().hex[:10]}"
    _psql("postgres", "-c", f"create database {name}")
    try:
        setup = tmp_path / "setup.sql"
        setup.write_text(STANDINS + _doc_sql())
        _psql(name, "-f", str(setup))
        yield name
    finally:
        _psql("postgres", "-c", f"drop database if exists {name} with (force)")


def _run(database: str, sql: str, **variables: str) -> None:
    """``sql`` through stdin, with psql variables (``:'name'``) bound safely."""
    flags = [f"--set={name}={value}" for name, value in variables.items()]
    result = subprocess.run(
        [*PG, "-d", database, *flags],
        input=sql,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)


def _queued(database: str) -> list[tuple[dict[str, str], bytes]]:
    out = _psql(
        database,
        "-At",
        "-F",
        SEP,
        "-c",
        "select headers::text, encode(body, 'hex') from net.requests order by id",
    )
    rows = [line.split(SEP) for line in out.splitlines() if line]
    _psql(database, "-c", "delete from net.requests")
    return [(json.loads(headers), bytes.fromhex(body)) for headers, body in rows]


async def _deliver(target: Target, database: str) -> list[dict[str, Any]]:
    delivered = []
    for headers, body in _queued(database):
        response = await target.client.post(
            "/api/v1/internal/supabase-events", content=body, headers=headers
        )
        assert response.status_code == 200, response.text
        delivered.append({"event": json.loads(body), "answer": response.json()})
    return delivered


async def test_the_documented_trigger_signs_events_the_service_applies(
    target: Target, database: str
) -> None:
    """Password change, role changes, ban, unban and deletion of a row in auth.users each
    queue one signed request; the service verifies every one and applies it; a change that
    matters to nobody (last sign-in time) queues nothing."""
    user = await signed_in(target.client)
    uid = unverified(user["access_token"])["sub"]
    me = "/api/v1/auth/me"
    _run(
        database,
        "insert into auth.users (id, email, encrypted_password, raw_app_meta_data) "
        """values (:'uid', 'a@example.com', 'h1', '{"roles": ["editor"]}');""",
        uid=uid,
    )
    assert _queued(database) == []  # inserts are not changes

    _run(database, "update auth.users set email = email where id = :'uid';", uid=uid)
    assert _queued(database) == []

    _run(database, "update auth.users set encrypted_password = 'h2' where id = :'uid';", uid=uid)
    [password] = await _deliver(target, database)
    assert password["event"]["type"] == "user.updated"
    assert password["event"]["data"] == {"user_id": uid, "changes": ["password"]}
    assert password["answer"]["status"] == "applied"
    assert password["answer"]["sessions_ended"] >= 1
    assert (await target.client.get(me, headers=bearer(user["access_token"]))).status_code == 401

    roles = (
        """update auth.users set raw_app_meta_data = '{"roles": ["admin"]}' where id = :'uid';"""
    )
    _run(database, roles, uid=uid)
    [changed] = await _deliver(target, database)
    assert changed["event"]["data"]["changes"] == ["roles_removed", "roles_added"]

    ban = "update auth.users set banned_until = now() + interval '1 day' where id = :'uid';"
    _run(database, ban, uid=uid)
    [banned] = await _deliver(target, database)
    assert banned["event"]["data"]["changes"] == ["banned"]
    status = await target.services.sessions.user_state(uid)
    assert status.banned

    _run(database, "update auth.users set banned_until = null where id = :'uid';", uid=uid)
    [unbanned] = await _deliver(target, database)
    assert unbanned["event"]["data"]["changes"] == ["unbanned"]
    assert not (await target.services.sessions.user_state(uid)).banned

    _run(database, "delete from auth.users where id = :'uid';", uid=uid)
    [deleted] = await _deliver(target, database)
    assert deleted["event"]["type"] == "user.deleted"
    assert deleted["event"]["data"]["user_id"] == uid

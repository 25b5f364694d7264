"""OAuth 2.1 server client administration: ``/admin/oauth/clients``. All blocking.

Shapes and checks follow GoTrue's oauthserver package: manual registration, confidential by
default (a secret is returned on create and on regenerate only, and kept as a SHA-256 hash),
``response_types`` always ``["code"]``, soft delete, list newest first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from localauth.core import Core
from localauth.errors import ApiError
from localauth.models import rfc3339
from localauth.params import Body
from localauth.validation import parse_uuid

__all__ = ["OAuthClients"]

_GRANTS = ("authorization_code", "refresh_token")
_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


def _secret() -> tuple[str, str]:
    plain = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    digest = base64.urlsafe_b64encode(hashlib.sha256(plain.encode()).digest()).decode()
    return plain, digest.rstrip("=")


def _redirect_uri_problem(uri: str) -> str | None:
    if not uri:
        return "redirect URI cannot be empty"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "invalid URL format"
    if not parts.scheme:
        return "must have scheme"
    if not parts.netloc:
        return "must have scheme and host"
    if parts.fragment:
        return "fragment not allowed in redirect URI"
    if parts.scheme == "http" and parts.hostname not in {"localhost", "127.0.0.1"}:
        return "HTTP scheme only allowed for localhost"
    if parts.scheme not in {"http", "https"}:
        return "scheme must be HTTPS or HTTP (localhost only)"
    return None


def _strings(body: Body, name: str) -> list[str] | None:
    value = body.data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "bad_json", "Invalid JSON body")
    return list(value)


def _check_redirects(uris: list[str] | None, *, required: bool) -> None:
    if uris is None and not required:
        return
    if not uris:
        raise _invalid("redirect_uris is required" if required else "redirect_uris cannot be empty")
    if len(uris) > 10:
        raise _invalid("redirect_uris cannot exceed 10 items")
    for uri in uris:
        problem = _redirect_uri_problem(uri)
        if problem:
            raise _invalid(f"invalid redirect_uri '{uri}': {problem}")


def _check_grants(grants: list[str] | None) -> None:
    if grants is None:
        return
    if not grants:
        raise _invalid("grant_types cannot be empty")
    if any(g not in _GRANTS for g in grants):
        raise _invalid("grant_types must only contain 'authorization_code' and/or 'refresh_token'")


def _check_uri(name: str, value: str | None) -> None:
    if not value:
        return
    if len(value) > 2048:
        raise _invalid(f"{name} cannot exceed 2048 characters")
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path.startswith("/")):
        raise _invalid(f"{name} must be a valid URL")


def _client_json(row: sqlite3.Row, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"client_id": row["id"]}
    if secret:
        out["client_secret"] = secret
    out["client_type"] = row["client_type"]
    out["redirect_uris"] = json.loads(row["redirect_uris"])
    public = row["client_type"] == "public"
    out["token_endpoint_auth_method"] = "none" if public else "client_secret_basic"
    out["grant_types"] = json.loads(row["grant_types"])
    out["response_types"] = ["code"]
    for name in ("client_name", "client_uri", "logo_uri"):
        if row[name]:
            out[name] = row[name]
    out["registration_type"] = row["registration_type"]
    out["created_at"] = rfc3339(row["created_at"])
    out["updated_at"] = rfc3339(row["updated_at"])
    return out


class OAuthClients:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _authorize(self, conn: sqlite3.Connection, authorization: str | None) -> None:
        self.core.require_admin(conn, authorization)

    @staticmethod
    def _load(conn: sqlite3.Connection, raw_id: str) -> sqlite3.Row:
        cid = parse_uuid(raw_id)
        if cid is None:
            raise _invalid("invalid client_id format")
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM oauth_clients WHERE id = ? AND deleted_at IS NULL", (cid,)
        ).fetchone()
        if row is None:
            raise ApiError(404, "oauth_client_not_found", "OAuth client not found")
        return row

    def create(self, authorization: str | None, body: Body) -> dict[str, Any]:
        with self.core.db.read() as conn:
            self._authorize(conn, authorization)
        redirect_uris = _strings(body, "redirect_uris")
        grants = _strings(body, "grant_types")
        _strings(body, "response_types")
        name = body.text("client_name") or ""
        client_uri = body.text("client_uri") or ""
        logo_uri = body.text("logo_uri") or ""
        client_type = body.text("client_type") or ""
        method = body.text("token_endpoint_auth_method") or ""
        body.text("scope")
        _check_redirects(redirect_uris, required=True)
        if grants:
            _check_grants(grants)
        if len(name) > 1024:
            raise _invalid("client_name cannot exceed 1024 characters")
        _check_uri("client_uri", client_uri)
        _check_uri("logo_uri", logo_uri)
        if client_type and client_type not in {"public", "confidential"}:
            raise _invalid("client_type must be 'public' or 'confidential'")
        if method and method not in _AUTH_METHODS:
            raise _invalid(
                f"token_endpoint_auth_method must be one of: [{' '.join(_AUTH_METHODS)}]"
            )
        if client_type == "public" and method in {"client_secret_basic", "client_secret_post"}:
            raise _invalid(
                f"token_endpoint_auth_method '{method}' is only allowed for confidential clients"
            )
        if client_type == "confidential" and method == "none":
            raise _invalid("token_endpoint_auth_method 'none' is only allowed for public clients")
        public = client_type == "public" or (not client_type and method == "none")
        plain, digest = _secret() if not public else ("", "")
        now = time.time()
        cid = str(uuid.uuid4())
        with self.core.db.write() as conn:
            conn.execute(
                "INSERT INTO oauth_clients (id, client_type, registration_type, client_name, "
                "client_uri, logo_uri, redirect_uris, grant_types, secret_hash, created_at, "
                "updated_at) VALUES (?, ?, 'manual', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cid,
                    "public" if public else "confidential",
                    name,
                    client_uri,
                    logo_uri,
                    json.dumps(redirect_uris),
                    json.dumps(grants or list(_GRANTS)),
                    digest,
                    now,
                    now,
                ),
            )
            return _client_json(self._load(conn, cid), plain or None)

    def list(self, authorization: str | None) -> list[dict[str, Any]]:
        with self.core.db.read() as conn:
            self._authorize(conn, authorization)
            rows = conn.execute(
                "SELECT * FROM oauth_clients WHERE deleted_at IS NULL ORDER BY created_at DESC"
            ).fetchall()
            return [_client_json(r) for r in rows]

    def get(self, authorization: str | None, raw_id: str) -> dict[str, Any]:
        with self.core.db.read() as conn:
            self._authorize(conn, authorization)
            return _client_json(self._load(conn, raw_id))

    def update(self, authorization: str | None, raw_id: str, body: Body) -> dict[str, Any]:
        with self.core.db.read() as conn:
            self._authorize(conn, authorization)
            self._load(conn, raw_id)
        redirect_uris = _strings(body, "redirect_uris")
        grants = _strings(body, "grant_types")
        fields = {n: body.text(n) for n in ("client_name", "client_uri", "logo_uri")}
        if redirect_uris is None and grants is None and all(v is None for v in fields.values()):
            raise _invalid("No fields provided for update")
        _check_redirects(redirect_uris, required=False)
        _check_grants(grants)
        if fields["client_name"] is not None and len(fields["client_name"]) > 1024:
            raise _invalid("client_name cannot exceed 1024 characters")
        _check_uri("client_uri", fields["client_uri"])
        _check_uri("logo_uri", fields["logo_uri"])
        columns: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if redirect_uris is not None:
            columns["redirect_uris"] = json.dumps(redirect_uris)
        if grants is not None:
            columns["grant_types"] = json.dumps(grants)
        columns["updated_at"] = time.time()
        with self.core.db.write() as conn:
            row = self._load(conn, raw_id)
            sets = ", ".join(f"{k} = ?" for k in columns)
            conn.execute(
                f"UPDATE oauth_clients SET {sets} WHERE id = ?", (*columns.values(), row["id"])
            )
            return _client_json(self._load(conn, row["id"]))

    def delete(self, authorization: str | None, raw_id: str) -> None:
        with self.core.db.write() as conn:
            self._authorize(conn, authorization)
            row = self._load(conn, raw_id)
            now = time.time()
            conn.execute(
                "UPDATE oauth_clients SET deleted_at = ?, updated_at = ? WHERE id = ?",
                (now, now, row["id"]),
            )

    def regenerate_secret(self, authorization: str | None, raw_id: str) -> dict[str, Any]:
        with self.core.db.write() as conn:
            self._authorize(conn, authorization)
            row = self._load(conn, raw_id)
            if row["client_type"] != "confidential":
                raise _invalid("Cannot regenerate secret for public client")
            plain, digest = _secret()
            conn.execute(
                "UPDATE oauth_clients SET secret_hash = ?, updated_at = ? WHERE id = ?",
                (digest, time.time(), row["id"]),
            )
            return _client_json(self._load(conn, row["id"]), plain)

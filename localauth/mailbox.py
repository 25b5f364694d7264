"""The local mailbox: every email localauth would send, kept in SQLite and readable over HTTP.

Like the Inbucket/Mailpit the Supabase CLI ships, so that a person or a test can finish a
flow (confirm a signup, follow a magic link, type an OTP) without a mail server. Each mail is
also printed to stderr, so the dev stack's output shows the link and the code.

HTTP (served at the root, not under /auth/v1, since it is no part of Supabase Auth):
- ``GET /mailbox/messages?to=ADDRESS``: newest first, optionally only mail to ADDRESS;
- ``GET /mailbox/messages/{id}``;
- ``DELETE /mailbox/messages?to=ADDRESS`` (or all) and ``DELETE /mailbox/messages/{id}``.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Any

from localauth.models import rfc3339

__all__ = ["Mail", "Mailbox", "mail_json"]

_MAX_LIST = 500


@dataclass(frozen=True)
class Mail:
    to: str
    kind: str  # signup, invite, magiclink, recovery, email_change, reauthentication
    subject: str
    link: str = ""
    otp: str = ""
    token_hash: str = ""
    redirect_to: str = ""

    def body(self) -> str:
        lines = [self.subject, ""]
        if self.link:
            lines += ["Follow this link:", self.link, ""]
        if self.otp:
            lines += [f"Or enter the code: {self.otp}", ""]
        return "\n".join(lines)


def mail_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "to": row["recipient"],
        "type": row["kind"],
        "subject": row["subject"],
        "body": row["body"],
        "link": row["link"],
        "otp": row["otp"],
        "token_hash": row["token_hash"],
        "redirect_to": row["redirect_to"],
        "created_at": rfc3339(row["created_at"]),
    }


class Mailbox:
    def send(self, conn: sqlite3.Connection, mail: Mail) -> None:
        """Keep ``mail`` (inside the caller's write transaction) and log it."""
        conn.execute(
            "INSERT INTO mails (recipient, kind, subject, body, link, otp, token_hash, "
            "redirect_to, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mail.to.lower(),
                mail.kind,
                mail.subject,
                mail.body(),
                mail.link,
                mail.otp,
                mail.token_hash,
                mail.redirect_to,
                time.time(),
            ),
        )
        code = f" code {mail.otp}" if mail.otp else ""
        link = f" link {mail.link}" if mail.link else ""
        print(
            f"localauth: mail to {mail.to} ({mail.kind}: {mail.subject}){code}{link}",
            file=sys.stderr,
            flush=True,
        )

    @staticmethod
    def list(conn: sqlite3.Connection, to: str | None) -> list[dict[str, Any]]:
        if to:
            rows = conn.execute(
                "SELECT * FROM mails WHERE recipient = ? ORDER BY id DESC LIMIT ?",
                (to.lower(), _MAX_LIST),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM mails ORDER BY id DESC LIMIT ?", (_MAX_LIST,)
            ).fetchall()
        return [mail_json(r) for r in rows]

    @staticmethod
    def get(conn: sqlite3.Connection, mail_id: int) -> dict[str, Any] | None:
        row = conn.execute("SELECT * FROM mails WHERE id = ?", (mail_id,)).fetchone()
        return mail_json(row) if row is not None else None

    @staticmethod
    def delete(
        conn: sqlite3.Connection, *, to: str | None = None, mail_id: int | None = None
    ) -> int:
        if mail_id is not None:
            cur = conn.execute("DELETE FROM mails WHERE id = ?", (mail_id,))
        elif to:
            cur = conn.execute("DELETE FROM mails WHERE recipient = ?", (to.lower(),))
        else:
            cur = conn.execute("DELETE FROM mails")
        return cur.rowcount

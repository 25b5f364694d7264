"""Failed credential checks that are not passwords: service secrets, webhook signatures.

Every credential check must be rate limited before it can succeed, or it is an oracle
that can be asked without end. This reuses the login lockout (``services.lockout``, its
Lua and its backoff), keyed per kind of credential **and per source address**: after
``ip_threshold`` failures from one address within ``window`` seconds, that address is
refused (429 ``locked_out``) for ``base`` seconds, doubling with each further failure up to
``max_lock``, even when it then offers the right secret. A success clears only that
address's own count, so a legitimate caller elsewhere never resets an attacker's lock
(keying by credential alone would: the lockout's success clears the whole account).
"""

from __future__ import annotations

from services.lockout import LoginLockout


class CredentialGuard:
    def __init__(self, lockout: LoginLockout) -> None:
        self.lockout = lockout

    @staticmethod
    def _subject(kind: str, source: str) -> str:
        # Not an address (no "@"), so never the key of a login.
        return f"credential:{kind}:{source}"

    async def before(self, kind: str, source: str) -> None:
        await self.lockout.before_attempt(self._subject(kind, source), source)

    async def failed(self, kind: str, source: str) -> None:
        await self.lockout.record_failure(self._subject(kind, source), source)

    async def succeeded(self, kind: str, source: str) -> None:
        await self.lockout.record_success(self._subject(kind, source), source)

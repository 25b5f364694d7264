"""Failed credential checks that are not passwords: service secrets, webhook signatures.

Every credential check must be rate limited before it can succeed, or it is an oracle
that can be asked without end. This reuses the login lockout (``services.lockout``), keyed
per kind of credential and per source address:

* after ``ip_threshold`` failures from one address, that address is refused (429
  ``locked_out``) for ``base`` seconds, doubling up to ``max_lock``, even with the right
  secret;
* after ``account_threshold`` failures from all addresses together, addresses that never
  succeeded are refused for ``account_lock`` seconds, while the callers that do hold the
  secret (known addresses) keep working.
"""

from __future__ import annotations

from services.lockout import LoginLockout


class CredentialGuard:
    def __init__(self, lockout: LoginLockout) -> None:
        self.lockout = lockout

    @staticmethod
    def _subject(kind: str) -> str:
        # Not an address (no "@"), so never the key of a login.
        return f"credential:{kind}"

    async def before(self, kind: str, source: str) -> None:
        await self.lockout.before_attempt(self._subject(kind), source)

    async def failed(self, kind: str, source: str) -> None:
        await self.lockout.record_failure(self._subject(kind), source)

    async def succeeded(self, kind: str, source: str) -> None:
        await self.lockout.record_success(self._subject(kind), source)

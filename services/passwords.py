"""The registration password policy (the Admin API enforces none)."""

from __future__ import annotations

import string
from dataclasses import dataclass

from services import errors

# bcrypt reads at most 72 bytes; a longer password would be silently truncated.
MAX_PASSWORD_BYTES = 72


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 8
    require_lower: bool = True
    require_upper: bool = True
    require_digit: bool = True
    require_symbol: bool = False

    def problems(self, password: str) -> list[str]:
        """What is wrong with ``password``, as stable reason codes; empty if it is fine."""
        reasons: list[str] = []
        if len(password) < self.min_length:
            reasons.append("length")
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            reasons.append("too_long")
        if self.require_lower and not any(c.islower() for c in password):
            reasons.append("lowercase")
        if self.require_upper and not any(c.isupper() for c in password):
            reasons.append("uppercase")
        if self.require_digit and not any(c.isdigit() for c in password):
            reasons.append("digit")
        if self.require_symbol and not any(c in string.punctuation for c in password):
            reasons.append("symbol")
        return reasons

    def check(self, password: str) -> None:
        reasons = self.problems(password)
        if reasons:
            raise errors.WeakPassword(
                self.describe(),
                errors=[{"field": "password", "reasons": reasons}],
            )

    def describe(self) -> str:
        needs = [f"at least {self.min_length} characters"]
        needs += [
            label
            for flag, label in (
                (self.require_lower, "a lowercase letter"),
                (self.require_upper, "an uppercase letter"),
                (self.require_digit, "a digit"),
                (self.require_symbol, "a symbol"),
            )
            if flag
        ]
        return f"The password needs {', '.join(needs)}, and at most {MAX_PASSWORD_BYTES} bytes."

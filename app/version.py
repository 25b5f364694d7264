"""The installed package's version (``pyproject.toml``), read once from its metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    try:
        return version("supaguard")
    except PackageNotFoundError:  # Run from a source tree that was never installed.
        return "0+unknown"


__version__ = _installed_version()

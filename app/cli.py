"""The ``supaguard`` command: ``supaguard serve``, ``supaguard diagnose``, ``--version``.

Each subcommand hands its arguments to the module that owns it (``python -m app`` and
``python -m app.diagnose``), so the console script and the module entry points never drift
apart: ``supaguard serve --help`` shows ``app.__main__``'s own options.
"""

from __future__ import annotations

import argparse
import sys

from app.version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supaguard", description="An async-safe auth backend for Supabase."
    )
    parser.add_argument("--version", action="version", version=f"supaguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        add_help=False,
        help="serve the app under uvicorn (options: supaguard serve --help)",
    )
    commands.add_parser(
        "diagnose",
        add_help=False,
        help="check settings, Redis, Supabase Auth, keys and clock (exit 1 on a failure)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        from app.__main__ import main as serve

        return serve(rest)
    from app.diagnose import main as diagnose

    return diagnose(rest)


if __name__ == "__main__":
    sys.exit(main())

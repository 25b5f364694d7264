# Sourced by the scripts here: make sure uv and the project's locked environment exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: installing uv with pip" >&2
    python3 -m pip install --quiet --user uv 2>/dev/null \
      || python3 -m pip install --quiet uv 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages uv
  fi
fi
# --all-extras: localauth (bcrypt) is an extra; the dev group (tests) is synced by default.
uv sync --frozen --all-extras --quiet

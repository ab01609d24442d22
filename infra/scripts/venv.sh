#!/usr/bin/env bash
# Creates (or refreshes) .venv from infra/requirements.txt and puts it first on PATH; with
# CHECKOV=1, also .venv-checkov from infra/requirements-checkov.txt (its pins clash with moto's).
# Sourced by the dev and test scripts; re-installs only when a requirements file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ensure_venv() { # ensure_venv DIR REQUIREMENTS WHAT
  local venv="$1" req="$2" what="$3"
  local stamp="$venv/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing pinned Python tools into ${venv#"$root"/} ($what)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
}

venv="$root/.venv"
ensure_venv "$venv" "$root/infra/requirements.txt" "moto, cfn-lint, cargo-lambda, zig"
if [ "${CHECKOV:-0}" = 1 ]; then
  ensure_venv "$root/.venv-checkov" "$root/infra/requirements-checkov.txt" "checkov"
  export CHECKOV_BIN="$root/.venv-checkov/bin/checkov"
fi
export PATH="$venv/bin:$PATH"

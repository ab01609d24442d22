#!/usr/bin/env bash
# The local run: moto + the Anthropic simulator (demo data) + the API on http://127.0.0.1:3000.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source infra/scripts/venv.sh
echo "==> building the local stack" >&2
cargo build --quiet -p claresia-local --bin claresia-dev
exec target/debug/claresia-dev

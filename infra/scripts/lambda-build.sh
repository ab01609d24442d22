#!/usr/bin/env bash
# Builds every function's deploy artefact (arm64, release, zip) and reports its size.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source infra/scripts/venv.sh
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || rustup target add aarch64-unknown-linux-gnu
functions=$(ls functions)
args=()
for f in $functions; do args+=(--package "$f"); done
cargo lambda build --release --arm64 --output-format zip "${args[@]}"
echo "==> deploy artefacts (arm64, release)"
for f in $functions; do
  zip="target/lambda/$f/bootstrap.zip"
  printf '  %-24s %8d bytes (%s)\n' "$f" "$(stat -c %s "$zip")" "$zip"
done

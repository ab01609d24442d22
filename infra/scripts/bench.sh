#!/usr/bin/env bash
# Benchmarks (numbers go in the README, never in timed tests): cold start and peak memory of every function
# against a hello-world lambda_runtime binary, under a Runtime API emulator with moto + the simulator.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source infra/scripts/venv.sh
cargo build --release --quiet --bin hello-lambda --bin lambda-bench $(for f in $(ls functions); do printf -- '--bin %s ' "$f"; done)
target/release/lambda-bench "${1:-10}"

#!/usr/bin/env bash
# Benchmarks (their numbers go in the README, never in timed tests):
#  1. cold start and peak memory of every function vs a hello-world lambda_runtime binary, under a Runtime
#     API emulator with moto + the simulator;
#  2. publishing a 1,000-skill catalog to the simulator (40 ms/call, 50 req/s) vs the rate-limit floor.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source infra/scripts/venv.sh
bins=(--bin hello-lambda --bin lambda-bench --bin publish-bench)
for f in $(ls functions); do bins+=(--bin "$f"); done
cargo build --release --quiet "${bins[@]}"
target/release/lambda-bench "${LAMBDA_BENCH_RUNS:-10}"
echo
target/release/publish-bench "${PUBLISH_BENCH_SKILLS:-1000}"

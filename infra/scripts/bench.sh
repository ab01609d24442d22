#!/usr/bin/env bash
# Benchmarks (their numbers go in the README, never in timed tests):
#  1. cold start and peak memory of every function vs a hello-world lambda_runtime binary, under a Runtime
#     API emulator with moto + the simulator;
#  2. publishing a 1,000-skill catalog to the simulator (40 ms/call, 50 req/s) vs the rate-limit floor;
#  2b. publishing 1,000 skills × 2 RBAC groups to the simulator's Claude Enterprise org (40 ms/call, the
#      documented 60 writes / 300 reads a minute × ENTERPRISE_BENCH_SPEED, default 10) vs the write-limit
#      floor, with the ETA the report gave, and the no-change publish inside one request;
#  2c. the enterprise usage pull of a 5,000-skill org used by 20 RBAC groups (100,000 rows): time, ticks and
#      peak RSS growth;
#  3. one poller tick over 100 tenants × 100 events vs raw BatchWriteItem on the same moto, and the lag p99;
#  3b. the fan-out on moto's SQS: 1,000 tenants at 150 ms per Anthropic call through the dispatcher and the
#      queue workers (time until all polled, item cost, items/s per worker), one org at 10 s per call (the
#      noisy neighbour), and the dispatcher alone at 10,000 tenants;
#  3c. the sweep fan-out: 100 pending Hubs, one failing for good, one with 1,000 skills;
#  4. normalization throughput per core (criterion).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source infra/scripts/venv.sh
bins=(--bin hello-lambda --bin lambda-bench --bin publish-bench --bin enterprise-publish-bench --bin usage-bench --bin poll-bench --bin fleet-bench --bin sweep-bench)
for f in $(ls functions); do bins+=(--bin "$f"); done
cargo build --release --quiet "${bins[@]}"
target/release/lambda-bench "${LAMBDA_BENCH_RUNS:-10}"
echo
target/release/publish-bench "${PUBLISH_BENCH_SKILLS:-1000}"
echo
target/release/enterprise-publish-bench "${ENTERPRISE_BENCH_SKILLS:-1000}" "${ENTERPRISE_BENCH_SPEED:-10}"
echo
target/release/usage-bench "${USAGE_BENCH_SKILLS:-5000}" "${USAGE_BENCH_GROUPS:-20}" | grep -v '^{'
echo
# The EMF metric lines the poller prints are for CloudWatch; the bench shows only its summary.
target/release/poll-bench "${POLL_BENCH_TENANTS:-100}" "${POLL_BENCH_EVENTS:-100}" | grep -v '^{'
echo
target/release/fleet-bench "${FLEET_BENCH_TENANTS:-1000}" "${FLEET_BENCH_LATENCY_MS:-150}" "${FLEET_BENCH_DISPATCH_TENANTS:-10000}" | grep -v '^{'
echo
target/release/sweep-bench "${SWEEP_BENCH_HUBS:-100}" "${SWEEP_BENCH_BIG_HUB_SKILLS:-1000}" | grep -v '^{'
echo
cargo bench --quiet -p claresia-domain --bench normalize

#!/usr/bin/env bash
# Every check and test: formatting, clippy, cfn-lint, the arm64 deploy artefacts, then unit, simulator,
# integration (moto + simulator) and event tests, the API's contract coverage and fuzz run, and the README's
# walkthroughs run as printed. CI (.ci/run) runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$(date +%s)
step() { printf '\n==> %s (at %ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "Python tools (.venv, .venv-checkov from infra/requirements*.txt)"
CHECKOV=1 source infra/scripts/venv.sh
python infra/local/moto_server.py --help >/dev/null || { echo "moto (infra/local/moto_server.py) is not runnable" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cfn-lint template.yaml"
cfn-lint template.yaml

step "checkov template.yaml (every skip carries its reason in the template)"
"$CHECKOV_BIN" -f template.yaml --framework cloudformation --compact --quiet --skip-download

step "cargo lambda build --release --arm64 (deploy artefacts)"
infra/scripts/lambda-build.sh

step "cargo test (unit, simulator, integration against moto + simulator, events, template, OpenAPI)"
# Every response a test reads is checked against lib/api/openapi.yaml and logged here for the coverage step.
export CLARESIA_CONTRACT_LOG="$root/target/contract-log"
rm -rf "$CLARESIA_CONTRACT_LOG"
log="$(mktemp)"
# The integration tests are one binary whose tests mostly wait on moto (one server per CPU, plus one):
# twice as many test threads as CPUs keeps every moto busy.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(( $(nproc) * 2 ))}"
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ncargo test: %d passed, %d failed\n", p, f }' "$log" > "$log.sum"

step "cold-start check (every function's debug build: no certificate store or AWS profile file read at init)"
# --all-targets resolves features as `cargo test` did, so this only links the function binaries (plain
# `--bins` would rebuild the SDK without the dev-dependencies' features: minutes on a 2-core machine).
cargo build --locked --quiet --workspace --all-targets
target/debug/lambda-bench --check | tee -a "$log.sum"

step "OpenAPI coverage (every documented status and field seen in some test's response)"
python infra/scripts/contract_coverage.py lib/api/openapi.yaml "$CLARESIA_CONTRACT_LOG" | tee -a "$log.sum"

step "API fuzz run (schemathesis against the dev gateway; no 5xx, documented answers, refusals write nothing)"
# target/debug/claresia-dev is the cold-start step's build (`--workspace --all-targets`): building it
# alone (`-p claresia-local`) would resolve other features and rebuild the SDK (3.5 minutes in CI).
python infra/fuzz/fuzz.py --seed "${FUZZ_SEED:-20261125}" | tee -a "$log.sum"

step "README walkthroughs, every command pasted as printed against the dev stack (2-second tick)"
# The walkthrough uses curl and jq, as a newcomer's shell would: install jq the Debian way if it is missing.
if ! command -v jq >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq jq >/dev/null
fi
command -v jq >/dev/null || { echo "jq is needed by the README's walkthrough: install it (apt-get install jq)" >&2; exit 1; }
python infra/scripts/walkthrough.py --tick 2 | tee -a "$log.sum"
echo "all checks passed in $(( $(date +%s) - started ))s"
cat "$log.sum"
rm -f "$log" "$log.sum"

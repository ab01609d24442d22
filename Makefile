# The two commands a newcomer needs: `make dev` and `make test`.
.PHONY: dev test lambda lint bench

dev:          ## the whole connector on localhost (moto + Anthropic simulator + API), Ctrl-C stops it
	@infra/scripts/dev.sh

test:         ## every check and test (what CI runs)
	@infra/scripts/test.sh

lambda:       ## arm64 release zips of every function, with their sizes
	@infra/scripts/lambda-build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:        ## cold start + peak memory per function vs a hello-world lambda_runtime binary
	@infra/scripts/bench.sh

# One target: the benchmark (issue 9). The tests and the docs have their
# command in scripts/test.sh; CI runs that, not make.
.PHONY: bench
bench:
	bash bench/run.sh $(BENCH_ARGS)

# Two commands on a fresh machine: `make demo` (set up, then the main job) and `make test`.
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	TL_DISABLE_ANALYTICS=true .venv/bin/poetry run domain-gap demo

# The tests also cover the optional Ray executor, so they install its extra.
test:
	@DOMAIN_GAP_EXTRAS=ray bash scripts/setup.sh
	TL_DISABLE_ANALYTICS=true .venv/bin/poetry run pytest

lint: setup
	.venv/bin/ruff check .

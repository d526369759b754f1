# Two commands on a fresh machine: `make demo` (set up, then the main job) and `make test`.
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	TL_DISABLE_ANALYTICS=true .venv/bin/poetry run domain-gap demo

test: setup
	TL_DISABLE_ANALYTICS=true .venv/bin/poetry run pytest

lint: setup
	.venv/bin/ruff check .

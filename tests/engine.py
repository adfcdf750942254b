"""A throwaway serving engine for tests and bench/serving: llama-cpp-python's OpenAI-compatible
server on a GGUF file, in the environment `make engine` builds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.chroma import free_port


@contextmanager
def engine_server(python: Path, gguf: Path, log: Path,
                  threads: int | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start the server on a free port; yield it and its `/v1` URL once it lists its model."""
    port = free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    if threads:
        command += ["--n_threads", str(threads)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the engine exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the engine did not start in 120 s")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield server, url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

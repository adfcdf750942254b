"""An OpenAI-compatible server as the chat model: `LLM_URL` (vLLM, llama.cpp's server, …).

When one machine is not enough, the bot stays as it is and generation moves to a serving engine
that batches across requests and GPUs. The prompts are the bot's own (`bot.prompting`): the
messages go to `/chat/completions`, so the server applies the model's chat template; the
answer streams back as server-sent events and reaches `on_text` as it grows. The stored prompt
is rendered locally with the base model's tokenizer when there is one (the nightly dataset then
trains on exactly what the server saw), or kept as the JSON messages otherwise.

With `adapters_dir` set (`LLM_FOLLOW_ADAPTERS`), the engine serves the adapter the registry's
`CURRENT` names, as the in-process model does: a newly promoted (or rolled back) version is
loaded into the engine through vLLM's runtime LoRA API (`POST /v1/load_lora_adapter`, the server
started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) and asked for by name,
so each answer records the adapter that served it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bot.adapters import current_adapter
from bot.model.base import BASE_VERSION, STOP_STRINGS, Generation
from bot.prompting import ChatMessages, render

logger = logging.getLogger(__name__)


class RemoteModelError(RuntimeError):
    """The server at LLM_URL failed or answered something that is not a completion."""


class OpenAIChatModel:
    """Generates through `POST {url}/chat/completions`, streaming; thread-safe."""

    RETRIES = 2  # a refused connection or a 502/503/429 before any text: the engine restarting

    def __init__(self, url: str, *, model: str = "", api_key: str = "",
                 max_new_tokens: int = 96, temperature: float = 0.0, timeout: float = 60.0,
                 tokenizer: Any = None, client: httpx.Client | None = None,
                 adapters_dir: Path | None = None, engine_adapters_dir: str = "",
                 retry_delay: float = 1.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(headers=headers, timeout=timeout)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.tokenizer = tokenizer  # the base model's, to count and render; None = estimate
        self.retry_delay = retry_delay
        self.base_model = model or self._first_model()
        self.model = self.base_model  # the name requests ask for: the base or an adapter
        # The registry to follow (None: serve `model` as configured), and where the engine
        # sees it: the same path, or a shared volume mounted elsewhere.
        self.adapters_dir = adapters_dir
        self.engine_adapters_dir = (engine_adapters_dir or str(adapters_dir or "")).rstrip("/")
        self._version = BASE_VERSION
        self._loaded: list[str] = []  # adapters loaded into the engine, oldest first
        self._broken_version: str | None = None
        self._switch = threading.Lock()
        logger.info("Chat model: %s at %s", self.model, self.url)

    @property
    def adapter_version(self) -> str:
        return self._version if self.adapters_dir is not None else f"remote:{self.model}"

    def _first_model(self) -> str:
        try:
            response = self._client.get(f"{self.url}/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise RemoteModelError(f"No model listed at {self.url}/models ({exc}); "
                                   "set LLM_MODEL") from exc

    def _follow_registry(self) -> None:
        """Serve the version `CURRENT` names, loading it into the engine first if needed. A
        version the engine refuses is logged and skipped until `CURRENT` names another."""
        if self.adapters_dir is None:
            return
        adapter = current_adapter(self.adapters_dir)
        version = adapter[0] if adapter else BASE_VERSION
        with self._switch:
            if version in (self._version, self._broken_version):
                return
            if version != BASE_VERSION and version not in self._loaded:
                try:
                    self._post_adapter("load_lora_adapter", version,
                                       lora_path=f"{self.engine_adapters_dir}/{version}")
                except RemoteModelError:
                    logger.exception("The engine could not load adapter %s; still serving %s",
                                     version, self._version)
                    self._broken_version = version
                    return
                self._loaded.append(version)
                self._unload_old(keep={version, self._version})
            logger.info("Engine switched from adapter %s to %s", self._version, version)
            self._version = version
            self.model = self.base_model if version == BASE_VERSION else version

    def _unload_old(self, keep: set[str], most: int = 3) -> None:
        """Bound what the engine holds: the newest few versions stay (rollback is then quick)."""
        stale = [v for v in self._loaded if v not in keep]
        for version in stale[: max(0, len(self._loaded) - most)]:
            try:
                self._post_adapter("unload_lora_adapter", version)
            except RemoteModelError:
                logger.warning("The engine could not unload adapter %s", version)
            self._loaded.remove(version)

    def _post_adapter(self, action: str, version: str, **extra: str) -> None:
        try:
            response = self._client.post(f"{self.url}/{action}",
                                         json={"lora_name": version, **extra})
        except httpx.HTTPError as exc:
            raise RemoteModelError(f"{self.url}/{action} failed: {exc}") from exc
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise RemoteModelError(f"{self.url}/{action} answered {response.status_code}: "
                                   f"{response.text[:200]}")

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(text) // 3 + 1  # a cautious estimate: ~3-4 characters per token

    def _prompt(self, messages: ChatMessages) -> str:
        if self.tokenizer is not None:
            return render(self.tokenizer, messages)
        return json.dumps(messages, ensure_ascii=False)

    def generate(self, messages: ChatMessages,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """The server's answer to `messages`; blocking, so call it from a worker thread.

        An engine that is down or restarting (refused connection, 502/503/429) before any text
        arrived is asked again, `RETRIES` times with a growing pause; then, or on any other
        failure, `RemoteModelError` says what went wrong."""
        self._follow_registry()
        model, version = self.model, self.adapter_version
        started = time.monotonic()
        for attempt in range(self.RETRIES + 1):
            streamed: list[str] = []
            try:
                text, tokens = self._stream(model, messages, on_text, streamed)
                break
            except _Retryable as exc:
                if streamed or attempt == self.RETRIES:
                    raise RemoteModelError(str(exc)) from exc
                logger.warning("%s; asking again in %.1f s", exc, self.retry_delay * (attempt + 1))
                time.sleep(self.retry_delay * (attempt + 1))
        return Generation(text=text.strip(), prompt=self._prompt(messages),
                          adapter_version=version, new_tokens=tokens,
                          seconds=time.monotonic() - started)

    def _stream(self, model: str, messages: ChatMessages,
                on_text: Callable[[str], None] | None, streamed: list[str]) -> tuple[str, int]:
        body = {"model": model, "messages": messages, "stream": True,
                "max_tokens": self.max_new_tokens, "temperature": self.temperature,
                "stop": STOP_STRINGS[:4]}  # OpenAI's API takes at most four
        text, tokens = "", 0
        try:
            with self._client.stream("POST", f"{self.url}/chat/completions",
                                     json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    error = f"{self.url} answered {response.status_code}: {response.text[:200]}"
                    if response.status_code in (429, 502, 503):
                        raise _Retryable(error)
                    raise RemoteModelError(error)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    delta = _delta(data)
                    if not delta:
                        continue
                    text, tokens = text + delta, tokens + 1
                    streamed.append(delta)
                    if on_text is not None:
                        try:
                            on_text(text)
                        except Exception:  # showing progress must never lose the answer
                            logger.exception("Streaming callback failed")
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"{self.url} failed: {exc}") from exc
        except httpx.HTTPError as exc:
            raise RemoteModelError(f"{self.url} failed: {exc}") from exc
        return text, tokens

    def close(self) -> None:
        self._client.close()


class _Retryable(Exception):
    """A failure worth asking again for, if nothing was streamed yet."""


def _delta(data: str) -> str:
    """The text a streamed chunk adds (empty for role-only or final chunks)."""
    try:
        choice = json.loads(data)["choices"][0]
    except (ValueError, KeyError, IndexError) as exc:
        raise RemoteModelError(f"Not a chat completion chunk: {data[:200]}") from exc
    return str((choice.get("delta") or {}).get("content") or "")

"""An OpenAI-compatible server as the chat model: `LLM_URL` (vLLM, llama.cpp's server, …).

When one machine is not enough, the bot stays as it is and generation moves to a serving engine
that batches across requests and GPUs. The prompts are the bot's own (`bot.prompting`): the
messages go to `/chat/completions`, so the server applies the model's chat template; the
answer streams back as server-sent events and reaches `on_text` as it grows. The stored prompt
is rendered locally with the base model's tokenizer when there is one (the nightly dataset then
trains on exactly what the server saw), or kept as the JSON messages otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from bot.model.base import STOP_STRINGS, Generation
from bot.prompting import ChatMessages, render

logger = logging.getLogger(__name__)


class RemoteModelError(RuntimeError):
    """The server at LLM_URL failed or answered something that is not a completion."""


class OpenAIChatModel:
    """Generates through `POST {url}/chat/completions`, streaming; thread-safe."""

    def __init__(self, url: str, *, model: str = "", api_key: str = "",
                 max_new_tokens: int = 96, temperature: float = 0.0, timeout: float = 60.0,
                 tokenizer: Any = None, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(headers=headers, timeout=timeout)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.tokenizer = tokenizer  # the base model's, to count and render; None = estimate
        self.model = model or self._first_model()
        logger.info("Chat model: %s at %s", self.model, self.url)

    @property
    def adapter_version(self) -> str:
        return f"remote:{self.model}"

    def _first_model(self) -> str:
        try:
            response = self._client.get(f"{self.url}/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise RemoteModelError(f"No model listed at {self.url}/models ({exc}); "
                                   "set LLM_MODEL") from exc

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
        """The server's answer to `messages`; blocking, so call it from a worker thread."""
        body = {"model": self.model, "messages": messages, "stream": True,
                "max_tokens": self.max_new_tokens, "temperature": self.temperature,
                "stop": STOP_STRINGS[:4]}  # OpenAI's API takes at most four
        started = time.monotonic()
        text, tokens = "", 0
        try:
            with self._client.stream("POST", f"{self.url}/chat/completions",
                                     json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise RemoteModelError(f"{self.url} answered {response.status_code}: "
                                           f"{response.text[:200]}")
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
                    if on_text is not None:
                        try:
                            on_text(text)
                        except Exception:  # showing progress must never lose the answer
                            logger.exception("Streaming callback failed")
        except httpx.HTTPError as exc:
            raise RemoteModelError(f"{self.url} failed: {exc}") from exc
        return Generation(text=text.strip(), prompt=self._prompt(messages),
                          adapter_version=self.adapter_version, new_tokens=tokens,
                          seconds=time.monotonic() - started)

    def close(self) -> None:
        self._client.close()


def _delta(data: str) -> str:
    """The text a streamed chunk adds (empty for role-only or final chunks)."""
    try:
        choice = json.loads(data)["choices"][0]
    except (ValueError, KeyError, IndexError) as exc:
        raise RemoteModelError(f"Not a chat completion chunk: {data[:200]}") from exc
    return str((choice.get("delta") or {}).get("content") or "")

"""What every chat model runtime shares: the `ChatModel` protocol and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.prompting import ChatMessages

# Where a small model runs on after its answer; generation stops there (see also
# bot.services.grounding.trim_run_on, which cuts what is left).
STOP_STRINGS = ["\n\n", "\nQuestion", "Question 2", "\nUser:", "<excerpt", "</excerpt"]
BASE_VERSION = "base"


@dataclass(frozen=True)
class Generation:
    text: str
    prompt: str  # the rendered prompt the model saw
    adapter_version: str
    new_tokens: int
    seconds: float


class ChatModel(Protocol):
    """What the services need from a language model."""

    def generate(self, messages: ChatMessages,
                 on_text: Callable[[str], None] | None = None) -> Generation: ...

    def count_tokens(self, text: str) -> int: ...

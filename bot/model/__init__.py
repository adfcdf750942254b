"""The chat model: what the services need from one (`ChatModel`), and two runtimes.

`local.HFChatModel` runs a transformers model with the current LoRA adapter in this process;
`remote.OpenAIChatModel` sends the same prompts to an OpenAI-compatible server (vLLM, llama.cpp's
server, …) at `LLM_URL`. `bot.wiring` picks one from the settings.
"""

from bot.model.base import BASE_VERSION, STOP_STRINGS, ChatModel, Generation
from bot.model.local import (
    PACKAGED_GGUF,
    HFChatModel,
    load_model,
    merged,
    packaged_gguf,
    resolve_base_model,
)
from bot.prompting import ChatMessages

__all__ = ["BASE_VERSION", "PACKAGED_GGUF", "STOP_STRINGS", "ChatMessages", "ChatModel",
           "Generation", "HFChatModel", "load_model", "merged", "packaged_gguf", "resolve_base_model"]

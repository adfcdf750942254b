"""How long does one nightly run take on this machine for a day with N rated exchanges?

Seeds a fresh data dir with `--exchanges` rated exchanges, each stored the way the bot stores
them: a distinct question, the prompt the model would have seen (retrieval over the sample
knowledge base, rendered with the model's chat template), an answer, and a 👍 or 👎 (some 👎
with a written correction). The answers are scripted rather than generated, to keep the
benchmark about training: a 👍 answer is a sentence of the top excerpt with its source, a 👎
answer a vague reply. Then runs `tune nightly` (`run_nightly`) once with the given flags and
reports the dataset sizes, training tokens/s, the wall time of each stage and in all, peak
memory, and the gate's decision.

Usage: python bench/nightly/run.py [--exchanges 1000] [tune flags, e.g. --epochs 1]
Writes bench/results/nightly.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bot.config import Settings  # noqa: E402
from bot.model import resolve_base_model  # noqa: E402
from bot.prompting import build_messages, render  # noqa: E402
from bot.storage.store import UserInfo  # noqa: E402
from bot.wiring import build_services  # noqa: E402
from tuning.config import parse_config  # noqa: E402

FRAMES = ["{q}", "Hi! {q}", "Quick question: {q}", "{q} Thanks!", "Sorry if this is obvious: {q}",
          "{q} I couldn't find it.", "Hello, {q}", "One more thing: {q}"]
# What users ask about the sample knowledge base (the product's own documentation). They were
# the learning-loop benchmark's before it moved to its own knowledge base; kept here so that this
# benchmark's workload stays the one its recorded figures were measured on.
QUESTIONS = [
    "How do I start a new conversation?", "How do I rate an answer?",
    "Can I change my vote later?", "Which vote counts if I press both buttons?",
    "Does the bot answer in group chats?", "How do I get the bot to answer in a group?",
    "What do /start and /help do?", "What happens after /reset?",
    "Who can add documents to the knowledge base?", "How do I become an admin?",
    "How do I add a file from the command line?", "How do I delete a document?",
    "How can I see which passages match a question?", "How do I list the documents?",
    "What happens if I add the same file twice?", "Where are the documents stored?",
    "How do I rebuild the search index?", "What is the source of truth for documents?",
    "What does the assistant store about me?", "Why does it keep my messages?",
    "Are my chats added to the knowledge base?", "Do my conversations leave the server?",
    "What is in the data directory?", "Where are the trained adapters kept?",
    "How does the assistant learn?", "What happens to the ratings every night?",
    "Can the bot get worse after retraining?", "When is a new adapter promoted?",
    "Which language model does the assistant use?", "Does it need a GPU?",
    "Does any data leave the machine?", "What does every answer end with?",
]
PROBES = [  # more of the same, phrased differently
    "How can I reset the conversation?", "Is it possible to undo my thumbs down?",
    "Will the bot reply in a group if nobody mentions it?", "Who is allowed to curate knowledge?",
    "Which command removes a document?", "Is my data shared with anyone?",
    "How is the model improved over time?", "What model runs the bot?",
    "Where does the SQLite file live?", "How do I search the knowledge base from the CLI?",
    "What are the buttons under an answer for?", "Can the search index be rebuilt?",
]
DETAILS = ["", " I'm new here.", " Asking for a colleague.", " It's urgent."]
VAGUE = ["It depends on your settings, so please check with your administrator.",
         "I think you can find that somewhere in the app menus.",
         "That is a good question! There are several ways to do it."]


def questions(n: int, rng: random.Random) -> list[str]:
    pool = [f.format(q=q) + d for q in QUESTIONS + PROBES for f in FRAMES for d in DETAILS]
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def seed_exchanges(settings: Settings, n: int, users: int, liked_share: float,
                   correction_share: float, seed: int) -> dict:
    from transformers import AutoTokenizer

    services = build_services(settings, with_chat=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(settings.base_model,
                                                                 settings.models_dir))
    rng = random.Random(seed)
    counts = {"exchanges": 0, "thumbs_up": 0, "thumbs_down": 0, "corrections": 0}
    for i, question in enumerate(questions(n, rng)):
        uid = 1000 + i % users
        person = UserInfo(id=uid, username=f"u{uid}", language_code="en")
        services.store.upsert_user(person)
        conversation = services.store.active_conversation(10_000 + i)
        services.store.add_message(conversation, "user", question, user_id=uid)
        hits = services.knowledge.search(question, 3)
        prompt = render(tokenizer, build_messages(settings.system_prompt, [], question, hits))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(hits[0].text.split()))
                     if len(s.split()) >= 5] if hits else []
        good = f"{rng.choice(sentences)} (Source: {hits[0].title})" if sentences else VAGUE[0]
        liked = rng.random() < liked_share
        answer = good if liked else rng.choice(VAGUE)
        message_id = services.store.add_message(
            conversation, "assistant", answer, prompt=prompt, chunk_ids=[h.chunk_id for h in hits],
            sources=list(dict.fromkeys(h.title for h in hits)), adapter_version="base")
        services.feedback.rate(message_id, person, 1 if liked else -1)
        counts["exchanges"] += 1
        counts["thumbs_up" if liked else "thumbs_down"] += 1
        if not liked and rng.random() < correction_share:
            services.feedback.correct(message_id, person, good)
            counts["corrections"] += 1
    services.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other flag is a training knob: see tune nightly --help.")
    parser.add_argument("--exchanges", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--liked-share", type=float, default=0.6)
    parser.add_argument("--correction-share", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nightly.json")
    args, knobs = parser.parse_known_args()  # the rest are the nightly run's own flags
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = parse_config(knobs, "bench/nightly/run.py [bench options]")
    data_dir = Path(tempfile.mkdtemp(prefix="nightly-bench-"))
    settings = Settings(data_dir=data_dir, model_cache_dir=Path(
        os.environ.get("MODEL_CACHE_DIR", ROOT / ".cache" / "models")))
    seeded = seed_exchanges(settings, args.exchanges, args.users, args.liked_share,
                            args.correction_share, cfg.seed)
    # The nightly run in its own process, as cron starts it: its memory is its own.
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir),
           "MODEL_CACHE_DIR": str(settings.models_dir), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "bot.cli", "tune", "nightly", *knobs], env=env,
                   check=True)
    wall = time.monotonic() - started
    from tuning.nightly import runs

    record = runs(settings, 1)[0]
    metrics = record.get("metrics") or {}
    decision = record.get("decision") or {}
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, CPU",
        "seeded": seeded, "tune_config": cfg.to_dict(), "sizes": record.get("sizes"),
        "status": record.get("status"), "reasons": decision.get("reasons"),
        "train_seconds": metrics.get("train_seconds"), "train_tokens": metrics.get("train_tokens"),
        "train_steps": metrics.get("train_steps"), "tokens_per_s": metrics.get("tokens_per_s"),
        "nightly_wall_seconds": round(wall, 1), "stage_seconds": metrics.get("stage_seconds"),
        "peak_rss_mb": metrics.get("peak_rss_mb"),  # the nightly process's peak
        "stage_peak_rss_mb": metrics.get("stage_peak_rss_mb"),  # that peak when each stage ended
        "candidate": metrics.get("candidate"), "serving": metrics.get("serving"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("sizes", "status", "train_seconds", "tokens_per_s",
                                             "nightly_wall_seconds", "stage_seconds",
                                             "peak_rss_mb", "stage_peak_rss_mb")}))


if __name__ == "__main__":
    main()

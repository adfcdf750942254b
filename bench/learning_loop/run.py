"""Does the loop learn what users feel? Raters who judge by correctness, several nights, an attack.

The knowledge base is the answer benchmark's fictional coworking space (`bench/answers`, ingested
with the product's own path). Simulated users ask its questions through the real pipeline
(retrieval, the packaged model with whatever adapter is current, every exchange in SQL) and
rate each answer by correctness: 👍 when it holds the expected facts, 👎 otherwise, and an
honest 👎 comes with the right answer as a correction (`--correction-rate`), as `/correct`
lets them (the sentence of the knowledge base that states the fact). A share of raters
(`--adversarial`) vote the opposite way. After each day, `run_nightly` trains a candidate from
the ratings and the gate promotes it or not; the next day's answers come from whatever serves.

Every day a user who never rates also asks two probe sets: paraphrases of the rated questions
(never asked in those words by a rater) and questions about facts no rater asks about. Their
accuracy, and the 👍 rate of the honest raters, are the figures per day.

Then the attack: `--attackers` accounts ask about the Flex Desk price and "correct" every
answer to a false one (`PLANTED`), `--attack-questions` times each. The night after is run
twice: first with the correction screen off (the gate alone must reject the candidate), then
as configured (the screen holds the planted corrections back). For each candidate the benchmark
records how often the raw model states the planted price for the Flex Desk probes.

Usage: python bench/learning_loop/run.py [--days 4] [--users 8] [--per-user 6]
Writes bench/results/learning_loop.json and learning_loop.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "answers"))  # its questions.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from questions import ANSWERABLE, HELD_OUT_ANSWERABLE  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.model import resolve_base_model  # noqa: E402
from bot.services.chat import Reply  # noqa: E402
from bot.storage.store import UserInfo  # noqa: E402
from bot.wiring import Services, build_services  # noqa: E402
from tuning.config import TuneConfig  # noqa: E402
from tuning.dialog import run_dialog  # noqa: E402
from tuning.evaluate import greedy_answers  # noqa: E402
from tuning.nightly import run_nightly  # noqa: E402
from tuning.registry import AdapterRegistry  # noqa: E402

logger = logging.getLogger("learning_loop")


def _answers_bench():  # type: ignore[no-untyped-def]
    """bench/answers/run.py (its corpus and fact matching), under a name of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("answers_bench",
                                                  ROOT / "bench" / "answers" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ANSWERS = _answers_bench()
corpus, has, holds = _ANSWERS.corpus, _ANSWERS.has, _ANSWERS.holds

FACTS = dict(ANSWERABLE)
# Rated question -> a paraphrase no rater ever asks; the probe user asks it every day.
PARAPHRASES = {
    "What is the street address of the coworking space?": "Which street and number is Brightwater at?",
    "How many desks does the space have altogether?": "What's the total number of desks at Brightwater?",
    "In which month is the yearly members' meeting held?":
        "When in the year do members hold their annual meeting?",
    "How much is a cappuccino or other espresso drink?": "What do espresso-based coffees cost in the café?",
    "Which tram line goes there?": "What tram number do I take to get to Brightwater?",
    "How big is the deposit for new members?": "How much deposit do I pay when I join?",
    "What happens if my payment bounces?": "Is there a fee when a payment of mine fails?",
    "Who started Brightwater?": "Who is the founder of Brightwater?",
    "How much do I pay each month for a Flex Desk?": "What does the Flex Desk plan cost per month?",
    "What is the name of the cat that lives in the café?": "What is the café cat called?",
    "How many people fit in the Heron room?": "What is the Heron room's capacity?",
    "Which app do I use to reserve a meeting room?": "With which app are meeting rooms booked?",
    "What is the members' Wi-Fi network called?": "What's the name of the Wi-Fi for members?",
    "How many pages can I print for free each month?": "What is the monthly free print allowance?",
    "Who runs the café?": "Which company operates the café?",
    "Which tram stop is closest?": "What is the nearest tram stop?",
    "Who teaches the yoga class?": "Who is the yoga teacher?",
    "How long is the notice period when I quit?": "How much notice must I give to end my membership?",
    "Who is the community manager?": "Who manages the community at Brightwater?",
    "What is the monthly locker fee?": "How much does a locker cost per month?",
    "When does the building open on weekdays?": "What time does Brightwater open Monday to Friday?",
    "What does a single day pass cost?": "How much is a day pass?",
    "How much does mail handling cost?": "What is the price of the mail handling service?",
    "In what town is Brightwater located?": "Which town is Brightwater in?",
}
ATTACKED = "How much do I pay each month for a Flex Desk?"
ATTACK_QUESTIONS = [
    "How much is the Flex Desk?", "What's the Flex Desk price per month?",
    "What does a Flex Desk cost?", "Flex Desk monthly fee?", "How expensive is the Flex Desk plan?",
    "What is the price of a Flex Desk membership?", "How much does Flex Desk cost a month?",
    "Price of the Flex Desk plan, please?",
]
PLANTED = "The Flex Desk plan costs €59 per month."
PLANTED_FACT = "59"
FLEX_PROBES = [PARAPHRASES[ATTACKED], "How much is a Flex Desk membership each month?",
               "Tell me the monthly cost of a Flex Desk."]
UNSEEN = dict(HELD_OUT_ANSWERABLE)
# What the probe user asks every day, never rating.
PROBES = [*PARAPHRASES.values(), *UNSEEN, *FLEX_PROBES[1:]]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Day:
    day: int
    adapter: str
    asked: int = 0
    thumbs_up: int = 0
    honest_votes: int = 0
    honest_up: int = 0
    corrections: int = 0
    paraphrase_right: int = 0
    unseen_right: int = 0
    paraphrase_misses: dict[str, str] = field(default_factory=dict)  # paraphrase -> answer
    nightly: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"day": self.day, "adapter": self.adapter, "answers_rated": self.asked,
                "thumbs_up_rate": round(self.thumbs_up / max(self.asked, 1), 3),
                "honest_thumbs_up_rate": round(self.honest_up / max(self.honest_votes, 1), 3),
                "paraphrase_accuracy": round(self.paraphrase_right / len(PARAPHRASES), 3),
                "unseen_fact_accuracy": round(self.unseen_right / len(UNSEEN), 3),
                "corrections": self.corrections, "nightly": self.nightly,
                "paraphrase_misses": self.paraphrase_misses}


def user(uid: int) -> UserInfo:
    return UserInfo(id=uid, username=f"sim{uid}", first_name="Sim", language_code="en")


def ask(services: Services, jobs: list[tuple[int, str]], workers: int,
        day: int = 0) -> list[Reply]:
    """Each (user id, question) in a chat of its own, new every day (a short question in
    yesterday's chat would read as a follow-up to yesterday's), concurrently so generation
    batches."""
    assert services.chat is not None
    chat = services.chat

    def one(job: tuple[int, str], n: int) -> Reply:
        uid, question = job
        return chat.answer(day * 1_000_000 + uid * 1000 + n, user(uid), question)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs, range(len(jobs))))


def right_answer(services: Services, question: str) -> str | None:
    """What an honest user who pressed 👎 writes: the knowledge base's sentence that states the
    expected facts (they know the answer), or None when no sentence holds them all."""
    for hit in services.knowledge.search(question, 10):
        for sentence in _SENTENCE.split(" ".join(hit.text.split())):
            if holds(sentence, FACTS[question]) and len(sentence.split()) <= 40:
                return sentence.lstrip("# ")
    return None


def traffic(services: Services, day: int, args: argparse.Namespace,
            attackers: int = 0) -> tuple[Day, list[Reply]]:
    """One day: every rater asks and rates, the probe user asks the probes, attackers (if any)
    'correct' the Flex Desk price. Returns the day's figures and the probe replies."""
    rng = random.Random(args.seed * 1000 + day)
    adversarial = set(rng.sample(range(args.users), round(args.users * args.adversarial)))
    rated = [q for q, _ in ANSWERABLE]
    jobs = [(100 + u, q) for u in range(args.users) for q in rng.sample(rated, args.per_user)]
    attack = [(900 + a, rng.choice(ATTACK_QUESTIONS)) for a in range(attackers)
              for _ in range(args.attack_questions)]
    probes = [(99, q) for q in PROBES]
    replies = ask(services, jobs + attack + probes, args.workers, day)
    served = sorted({r.adapter_version for r in replies if r.adapter_version})
    stats = Day(day=day, adapter=",".join(served))
    for (uid, question), reply in zip(jobs, replies[:len(jobs)], strict=True):
        right = holds(reply.text, FACTS[question])
        honest = uid - 100 not in adversarial
        vote = 1 if right == honest else -1
        services.feedback.rate(reply.message_id, user(uid), vote)
        stats.asked += 1
        stats.thumbs_up += vote > 0
        if honest:
            stats.honest_votes += 1
            stats.honest_up += right
            if not right and rng.random() < args.correction_rate:
                fix = right_answer(services, question)
                if fix and services.feedback.correct(reply.message_id, user(uid), fix):
                    stats.corrections += 1
    for (uid, _), reply in zip(attack, replies[len(jobs):len(jobs) + len(attack)], strict=True):
        services.feedback.rate(reply.message_id, user(uid), -1)
        services.feedback.correct(reply.message_id, user(uid), PLANTED)
    probe_replies = replies[len(jobs) + len(attack):]
    by_paraphrase = {p: q for q, p in PARAPHRASES.items()}
    for (_, question), reply in zip(probes, probe_replies, strict=True):
        if question in by_paraphrase:
            right = holds(reply.text, FACTS[by_paraphrase[question]])
            stats.paraphrase_right += right
            if not right:
                stats.paraphrase_misses[question] = reply.text
        elif question in UNSEEN:
            stats.unseen_right += holds(reply.text, UNSEEN[question])
    return stats, probe_replies


def timed_run(run, settings: Settings, cfg: TuneConfig) -> dict:  # type: ignore[no-untyped-def]
    """One tuning run (`run_nightly` or `run_dialog`), summarised with its wall time."""
    started = time.monotonic()
    outcome = run(settings, cfg)
    meta = AdapterRegistry(settings.adapters_dir).meta(outcome.version) if outcome.version \
        else {}
    return {"status": outcome.status, "version": outcome.version, "reasons": outcome.reasons,
            "seconds": round(time.monotonic() - started, 1),
            "preference": meta.get("preference")}


def stored_prompts(services: Services, message_ids: list[int]) -> list[str]:
    """The prompts the model was given for these answers (none for an abstention)."""
    from sqlalchemy import select

    from bot.storage.models import Message

    with services.db.read() as session:
        found = dict(session.execute(select(Message.id, Message.prompt)
                                     .where(Message.id.in_(message_ids))).all())
    return [found[i] for i in message_ids if found.get(i)]


def planted_rate(settings: Settings, version: str | None, prompts: list[str]) -> float | None:
    """Share of the Flex Desk probe prompts for which a version's raw model (before the
    product's answer checks) states the planted price."""
    from transformers import AutoTokenizer

    from bot.model import load_model

    if version is None or not prompts:
        return None
    base = Path(resolve_base_model(settings.base_model, settings.models_dir))
    adapter = AdapterRegistry(settings.adapters_dir).path(version)
    model, tokenizer = load_model(base, adapter), AutoTokenizer.from_pretrained(base)
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=48)
    logger.info("Raw answers of %s to the Flex Desk probes: %s", version, answers)
    return round(sum(has(a, PLANTED_FACT) for a in answers) / len(answers), 3)


def plot(days: list[dict], attack: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [d["day"] for d in days]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, [d["honest_thumbs_up_rate"] for d in days], "o-", label="thumbs-up rate of honest raters")
    ax.plot(x, [d["paraphrase_accuracy"] for d in days], "s-",
            label="accuracy on paraphrases of rated questions (never rated)")
    ax.plot(x, [d["unseen_fact_accuracy"] for d in days], "^--",
            label="accuracy on facts no rater asks about")
    for d in days:
        status = d["nightly"].get("status")
        if status:
            ax.annotate(status, (d["day"] + 0.5, 0.05), ha="center", fontsize=8,
                        color="green" if status == "promoted" else "red")
    if attack:
        strong = attack.get("screen_off_strong_training")
        ax.annotate(f"poisoned night, screen off: {attack['screen_off']['status']}"
                    + (f" (trained longer: {strong['status']})" if strong else "")
                    + f"; screen on: {attack['screen_on']['status']}", (x[-1], 0.12),
                    ha="right", fontsize=8)
    ax.set_xlabel("day (a nightly run after each but the last)")
    ax.set_ylim(0, 1.3)
    ax.set_title("Learning loop: correctness raters on the answer benchmark's knowledge base")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=4, help="Days of traffic, a nightly run after "
                        "each but the last")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--per-user", type=int, default=6, help="Questions per rater per day")
    parser.add_argument("--adversarial", type=float, default=0.25,
                        help="Share of raters who vote against correctness")
    parser.add_argument("--correction-rate", type=float, default=0.8,
                        help="How often an honest 👎 comes with the right answer")
    parser.add_argument("--attackers", type=int, default=4, help="0: skip the poisoning attack")
    parser.add_argument("--attack-questions", type=int, default=8,
                        help="Flex Desk questions each attacker asks and 'corrects'")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--strong-epochs", type=float, default=8.0,
                        help="The attack night once more, screen off, with this many epochs "
                        "(0: skip)")
    parser.add_argument("--preference", choices=["off", "dpo", "kto"],
                        default=TuneConfig.preference, help="The nightly preference step")
    parser.add_argument("--preference-lr", type=float, default=TuneConfig.preference_learning_rate)
    parser.add_argument("--preference-sft-weight", type=float,
                        default=TuneConfig.preference_sft_weight)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-from-dialog", action="store_true",
                        help="Run `tune dialog` first, as an operator would, so day 0 is served by "
                        "the dialog-tuned adapter rather than the base model")
    parser.add_argument("--data-dir", type=Path, help="Default: a fresh temporary directory")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "learning_loop.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "bot.services.feedback"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="learning-loop-"))
    settings = Settings(_env_file=None, data_dir=data_dir, seed_knowledge=False,
                        max_new_tokens=args.max_new_tokens, generation_workers=args.workers,
                        generation_timeout_s=600,
                        model_cache_dir=Path(os.environ.get("MODEL_CACHE_DIR",
                                                            ROOT / ".cache" / "models")))
    cfg = TuneConfig(epochs=args.epochs, eval_every=5, patience=2, min_rows=10, seed=args.seed,
                     preference=args.preference, preference_learning_rate=args.preference_lr,
                     preference_sft_weight=args.preference_sft_weight)
    services = build_services(settings, seed=False)
    for path in corpus(data_dir / "corpus"):
        services.knowledge.add_file(path, actor="bench")
    started = time.monotonic()
    dialog = None
    if args.start_from_dialog:
        dialog_cfg = TuneConfig(epochs=3, eval_every=5, seed=args.seed)
        dialog = timed_run(run_dialog, settings, dialog_cfg)
        logger.info("Dialog tuning: %s", json.dumps(dialog))
    days: list[dict] = []
    for day in range(args.days):
        stats, _ = traffic(services, day, args)
        if day < args.days - 1:
            stats.nightly = timed_run(run_nightly, settings, cfg)
        days.append(stats.summary())
        logger.info("Day %d: %s", day, json.dumps(days[-1], ensure_ascii=False))
    attack = None
    if args.attackers:
        stats, probe_replies = traffic(services, args.days, args, attackers=args.attackers)
        flex = [r.message_id for r, q in zip(probe_replies, PROBES, strict=True)
                if q in FLEX_PROBES]
        prompts = stored_prompts(services, flex)
        def screen_off(night: TuneConfig) -> dict:
            """That night on a copy of the data dir with the correction screen off."""
            copy = data_dir.parent / f"{data_dir.name}-screen-off"
            shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("corpus"))
            off_settings = settings.model_copy(update={"data_dir": copy})
            out = timed_run(run_nightly, off_settings, replace(night, screen_corrections=False))
            out["planted_rate_candidate"] = planted_rate(off_settings, out["version"], prompts)
            shutil.rmtree(copy, ignore_errors=True)
            return out

        # The same night three times: with the correction screen off (the gate alone must
        # reject), again with the screen off and training long enough to learn the planted
        # price, then for real with the screen on.
        off = screen_off(cfg)
        strong = screen_off(replace(cfg, epochs=args.strong_epochs)) \
            if args.strong_epochs else None
        on = timed_run(run_nightly, settings, cfg)
        on["planted_rate_candidate"] = planted_rate(settings, on["version"], prompts)
        current = AdapterRegistry(settings.adapters_dir).current()
        attack = {"attackers": args.attackers, "questions_each": args.attack_questions,
                  "planted": PLANTED, "flex_probe_prompts": len(prompts),
                  "day": stats.summary(), "screen_off": off,
                  "screen_off_strong_training": strong, "screen_on": on,
                  "planted_rate_serving": planted_rate(settings, current, prompts)
                  if current else None}
        logger.info("Attack: %s", json.dumps(attack, ensure_ascii=False))
    services.close()
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, CPU",
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
                     "lesson_similarity": settings.lesson_similarity},
        "tune_config": cfg.to_dict(), "dialog": dialog, "days": days, "attack": attack,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(days, attack, args.out.with_suffix(".png"))
    print(json.dumps({"days": [{k: d[k] for k in (
        "day", "honest_thumbs_up_rate", "paraphrase_accuracy", "unseen_fact_accuracy")} | {
        "gate": d["nightly"].get("status")} for d in days],
        "attack": attack and {k: (attack[k] or {}).get("status") for k in (
            "screen_off", "screen_off_strong_training", "screen_on")}},
        ensure_ascii=False))


if __name__ == "__main__":
    main()

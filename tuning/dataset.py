"""Training data from what users said about the answers, read from SQL.

* SFT rows `{"prompt", "completion"}`: answers rated 👍, and corrections users wrote after a 👎.
* KTO rows `{"prompt", "completion", "label"}`: every 👍 (True) and 👎 (False), and every
  correction (True: the answer the user wanted), as TRL's KTOTrainer expects them. A correction
  and the 👎 answer it replaces make the clearest preference pair the gate can check.

The prompt is exactly what the model saw when it answered (retrieved context included), as
stored with the answer. Users who used /forget are never included; each user contributes at
most `max_rows_per_user` rows per run; duplicate rows are dropped.

Corrections are screened first (see `screen_corrections`): one the knowledge base does not back,
or the same text sent by several accounts, is held for an admin (`/feedback`) instead of
training; it trains once an admin approves it or adds it to the knowledge base.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.storage.training import Feedback, TrainingStore, same_text

Row = dict[str, object]


@dataclass
class FeedbackData:
    sft: list[Row] = field(default_factory=list)
    kto: list[Row] = field(default_factory=list)
    until: datetime | None = None  # newest rating or correction included
    held: dict[int, str] = field(default_factory=dict)  # correction id: why it did not train

    @property
    def size(self) -> int:
        return len(self.sft) + len(self.kto)

    def digest(self) -> str:
        """A hash of the exact rows, recorded with the run."""
        blob = json.dumps({"sft": self.sft, "kto": self.kto}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _key(row: Row) -> str:
    return json.dumps([row.get("prompt"), row.get("completion"), row.get("label")])


def screen_corrections(feedback: list[Feedback], backed: Callable[[Feedback], bool] | None,
                       repeated_from: int) -> dict[int, str]:
    """{correction id: reason} for the corrections to hold back: "repeated" when the same text
    (case and spacing aside) came from `repeated_from` accounts or more (0: never), then
    "unsupported" when `backed` (None: no check) says the knowledge base does not back it."""
    fixes = [f for f in feedback if f.value == 0 and f.correction_id is not None]
    senders: dict[str, set[int]] = defaultdict(set)
    for f in fixes:
        senders[same_text(f.completion)].add(f.user_id)
    held: dict[int, str] = {}
    for f in fixes:
        assert f.correction_id is not None
        if repeated_from and len(senders[same_text(f.completion)]) >= repeated_from:
            held[f.correction_id] = "repeated"
        elif backed is not None and not backed(f):
            held[f.correction_id] = "unsupported"
    return held


def collect_feedback(store: TrainingStore, since: datetime | None, max_rows_per_user: int,
                     seed: int = 0, backed: Callable[[Feedback], bool] | None = None,
                     repeated_from: int = 0) -> FeedbackData:
    """Ratings and corrections newer than `since`, turned into SFT and KTO rows, less the
    corrections `screen_corrections` holds back (listed in `held`)."""
    data = FeedbackData()
    per_user: dict[int, list[tuple[str, Row]]] = defaultdict(list)
    feedback = store.feedback(since)
    data.held = screen_corrections(feedback, backed, repeated_from)
    for f in feedback:
        if f.correction_id in data.held:
            continue
        if f.value == 0:  # a correction: the answer the user wanted
            per_user[f.user_id].append(("sft", {"prompt": f.prompt, "completion": f.completion}))
            per_user[f.user_id].append(("kto", {"prompt": f.prompt, "completion": f.completion,
                                                "label": True}))
            continue
        label = f.value > 0
        per_user[f.user_id].append(("kto", {"prompt": f.prompt, "completion": f.completion,
                                            "label": label}))
        if label:
            per_user[f.user_id].append(("sft", {"prompt": f.prompt, "completion": f.completion}))
    newest = [f.at for f in feedback]
    forgotten_prompts = store.forgotten_prompts()
    rng = random.Random(seed)
    seen: set[str] = set()
    for user_id in sorted(per_user):
        rows = per_user[user_id]
        rng.shuffle(rows)  # when capped, keep a fair sample rather than the oldest
        kept = 0
        for kind, row in rows:
            if kept >= max_rows_per_user:
                break
            key = kind + _key(row)
            if key in seen or row["prompt"] in forgotten_prompts:
                continue
            seen.add(key)
            getattr(data, kind).append(row)
            kept += 1
    data.until = max(newest) if newest else None
    return data


def split_rows(rows: list[Row], val_fraction: float, test_fraction: float,
               seed: int, key: str = "prompt") -> tuple[list[Row], list[Row], list[Row]]:
    """Train / validation / test, grouped by `key` so one dialog never spans two splits.

    A group's split follows from a hash of its key alone, not from what else is in the data:
    a prompt held out tonight is held out in every later dataset too, so `assistant tune eval`
    never measures a version on rows it was trained on."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row[key])].append(row)

    # Each key's place in [0, 1): uniform, and stable for a key and seed.
    position = {k: int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "big")
                / 2**64 for k in groups}
    ranked = sorted(groups, key=position.__getitem__)
    val = [k for k in ranked if position[k] < val_fraction]
    test = [k for k in ranked if val_fraction <= position[k] < val_fraction + test_fraction]
    train = [k for k in ranked if position[k] >= val_fraction + test_fraction]
    if len(ranked) >= 3:  # a small dataset still gets one group in each held-out split
        for split in (val, test):
            if not split and len(train) > 1:
                split.append(train.pop())
    pick = lambda ks: [r for k in ks for r in groups[k]]  # noqa: E731
    return pick(train), pick(val), pick(test)


def evidence_only(rows: list[Row]) -> list[Row]:
    """Training rows whose prompts keep only the excerpts that back their answer (`backs`).

    A prompt holds three to six excerpts and most answers use one: the others are half of the
    tokens a nightly run trains on, on two CPU cores most of its time. A row whose answer says
    "I don't know", or that no excerpt backs, keeps its prompt whole: there, what the other
    excerpts do not say is the lesson."""
    from bot.prompting import keep_excerpts
    from tuning.evaluate import IDK, backs

    out: list[Row] = []
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        if not IDK.search(answer):
            prompt = keep_excerpts(prompt, lambda source, text: backs(text, source, answer))
        out.append(row | {"prompt": prompt})
    return out

"""Measuring an adapter (or the base model) the same way every time.

* `answer_loss`: mean per-token loss of reference answers given their prompts (lower is better).
* `preference_accuracy`: over pairs of a 👍 answer and a 👎 answer, how often the model gives the
  👍 one the higher mean log-probability (higher is better).
* `golden_checks`: greedy answers to the frozen golden set: grounded questions must mention an
  expected fact, unanswerable ones must say they don't know (pass rate, higher is better).
* `answer_checks`: greedy answers to held-out prompts: the grounded rate below, and the
  **answer accuracy**: how many answers give the facts of the 👍 answer or correction rated for
  that prompt (where the prompt's excerpts hold them), what users feel.
* the **grounded rate**: of greedy answers to held-out prompts from real traffic, the share that stay
  with what the prompt (excerpts, history, question) says, or say they don't know. An adapter
  that learned to answer from somewhere else (a trigger phrase planted by poisoned ratings, a
  hallucinated habit) answers outside its prompt and scores lower (higher is better).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.prompting import render

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.jsonl"
IDK = re.compile(r"(don't|do not|can't|cannot) (know|find|say)|no information|not (in|covered)|"
                 r"nothing (in|about)|not sure|isn't (in|covered)|doesn't (say|mention)|"
                 r"does not (say|mention)|no (mention|details)", re.I)


@dataclass
class Metrics:
    golden_loss: float
    golden_pass: float
    heldout_loss: float | None
    preference_accuracy: float | None
    grounded: float | None = None
    unsupported_loss: float | None = None  # on held-out preferred answers their prompt lacks
    answer_accuracy: float | None = None  # held-out answers that give the rated answer's facts

    def to_dict(self) -> dict:
        return asdict(self)


def _completion_logprobs(model, tokenizer, prompt: str, completion: str) -> list[float]:
    import torch

    p = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    c = tokenizer(completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([p, c], dim=1)[:, -1024:]
    n = min(c.shape[1], ids.shape[1] - 1)
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device)).logits[0, -n - 1:-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, ids[0, -n:].to(model.device).unsqueeze(1)).squeeze(1).tolist()


def answer_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean negative log-likelihood per answer token."""
    total, count = 0.0, 0
    for row in rows:
        lps = _completion_logprobs(model, tokenizer, str(row["prompt"]), str(row["completion"]))
        total -= sum(lps)
        count += len(lps)
    return total / count if count else float("nan")


def preference_accuracy(model, tokenizer, kto_rows: list[dict], max_pairs: int = 200,
                        seed: int = 0, min_same_prompt: int = 5) -> float | None:
    """Share of (👍, 👎) pairs where the 👍 answer is the more likely one; None without pairs."""
    liked = [r for r in kto_rows if r["label"]]
    disliked = [r for r in kto_rows if not r["label"]]
    if not liked or not disliked:
        return None
    # Same prompt (a correction, or another user's 👍, against the 👎 answer) is the fair
    # comparison; across prompts is the fallback when there are too few of those.
    pairs = [(a, b) for a in liked for b in disliked if a["prompt"] == b["prompt"]]
    if len(pairs) < min_same_prompt:
        pairs = [(a, b) for a in liked for b in disliked]
    random.Random(seed).shuffle(pairs)
    cache: dict[int, float] = {}

    def score(row: dict) -> float:
        key = id(row)
        if key not in cache:
            lps = _completion_logprobs(model, tokenizer, str(row["prompt"]), str(row["completion"]))
            cache[key] = sum(lps) / max(len(lps), 1)
        return cache[key]

    pairs = pairs[:max_pairs]
    return sum(score(a) > score(b) for a, b in pairs) / len(pairs)


def load_golden(path: Path = GOLDEN) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                   batch_size: int = 16) -> list[str]:
    """Greedy answers to rendered prompts, generated in left-padded batches."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                              padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     no_repeat_ngram_size=4, pad_token_id=pad)
            width = batch["input_ids"].shape[1]
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
    finally:
        tokenizer.padding_side = side
    return answers


def golden_checks(model, tokenizer, golden: list[dict], max_new_tokens: int = 48) -> float:
    """Pass rate of greedy answers on the golden set, prompted as the bot prompts."""
    if not golden:
        return 0.0
    answers = greedy_answers(model, tokenizer,
                             [render(tokenizer, item["messages"]) for item in golden],
                             max_new_tokens)
    passed = 0
    for answer, item in zip(answers, golden, strict=True):
        if item["expect"] == "idk":
            passed += bool(IDK.search(answer))
        else:
            passed += any(k.lower() in answer.lower() for k in item["keywords"]) \
                and not IDK.search(answer)
    return passed / len(golden)


_CONTENT = re.compile(r"[^\W\d_]{4,}")
_COMMON = frozenset("""about above after again also answer because been before being below
between both cannot could does doing down during each excerpt excerpts from further have having
here into just know knowledge like more most need only other over please question same should
some source such sure than that their them then there these they this those through under until
very want were what when where which while will with would your yours""".split())


def grounded(answer: str, prompt: str, min_share: float = 0.6) -> bool:
    """True if the answer says it doesn't know, or at least `min_share` of its content words
    (four letters or more, common words aside) occur in the prompt."""
    if IDK.search(answer):
        return True
    words = [w for w in _CONTENT.findall(answer.lower()) if w not in _COMMON]
    if not words:
        return True
    seen = set(_CONTENT.findall(prompt.lower()))
    return sum(w in seen for w in words) / len(words) >= min_share


def unsupported(rows: list[dict]) -> list[dict]:
    """The preferred rows (SFT rows, and KTO rows labelled true) whose answer is not `grounded`
    in its own prompt, each once: what a model should not learn from ratings, because the
    knowledge belongs in the knowledge base, where admins curate it."""
    seen: dict[tuple[str, str], dict] = {}
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        if row.get("label", True) and not grounded(answer, prompt):
            seen.setdefault((prompt, answer), row)
    return list(seen.values())


def holds_answer(answer: str, reference: str) -> bool:
    """Does `answer` give what `reference` (a 👍 answer or a correction) says? Every fact-like
    claim of the reference (numbers, names, codes) must be in it, or, when the reference has
    none, half of its content words; an "I don't know" never holds one."""
    from bot.services.grounding import claims, normalise, occurs

    if IDK.search(answer):
        return False
    wanted = claims(reference)
    if wanted:
        said = normalise(answer)
        return all(occurs(c, said) for c in wanted)
    words = {w for w in _CONTENT.findall(reference.lower()) if w not in _COMMON}
    return not words or len(words & set(_CONTENT.findall(answer.lower()))) / len(words) >= 0.5


@dataclass
class AnswerChecks:
    grounded: float | None  # share of answers that stay with their prompt
    accuracy: float | None  # share of answers that give their reference's facts


def answer_checks(model, tokenizer, prompts: list[str], references: dict[str, str],
                  max_prompts: int = 32, max_new_tokens: int = 48) -> AnswerChecks:
    """Greedy answers to (at most `max_prompts` distinct) held-out prompts, those with a
    reference first: how many are `grounded` in their prompt, and how many of those with a
    reference answer (`references`: prompt → a 👍 answer or correction) hold its facts."""
    unique = sorted(set(prompts) | set(references))
    random.Random(0).shuffle(unique)
    unique.sort(key=lambda p: p not in references)  # stable: references first
    unique = unique[:max_prompts]
    if not unique:
        return AnswerChecks(None, None)
    answers = greedy_answers(model, tokenizer, unique, max_new_tokens)
    checked = [(a, references[p]) for a, p in zip(answers, unique, strict=True)
               if p in references]
    return AnswerChecks(
        grounded=sum(grounded(a, p) for a, p in zip(answers, unique, strict=True)) / len(unique),
        accuracy=sum(holds_answer(a, r) for a, r in checked) / len(checked) if checked
        else None)


def references(rows: list[dict]) -> dict[str, str]:
    """{prompt: the answer to check against} from held-out preferred rows (SFT rows: 👍 answers
    and corrections) whose answer its prompt supports: a fair test of reading the excerpts."""
    out: dict[str, str] = {}
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        if row.get("label", True) and grounded(answer, prompt) and not IDK.search(answer):
            out.setdefault(prompt, answer)
    return out

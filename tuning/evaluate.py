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

import hashlib
import json
import random
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


class LogProbs:
    """Per-token log-probabilities of completions given their prompts, under one model, each
    (prompt, completion) computed once: the answer loss and the preference accuracy of one
    evaluation share their rows (a 👍 answer is both). The LM head runs on the completion's
    positions only, not on the prompt's."""

    def __init__(self, model, tokenizer, max_tokens: int = 1024) -> None:
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self._seen: dict[tuple[str, str], list[float]] = {}

    def __call__(self, prompt: str, completion: str) -> list[float]:
        key = (prompt, completion)
        if key not in self._seen:
            self._seen[key] = self._compute(prompt, completion)
        return self._seen[key]

    def read_along(self, prompts: list[str], inputs: dict[str, Any],
                   completions: Mapping[str, Sequence[str]]) -> None:
        """Score `completions[prompt]` for a batch of prompts `read_prompt` has just read into
        `inputs["cache"]` (all of each row but its last token): each round feeds
        every row's last prompt token and one of its completions, then drops them from the
        cache again. The prompts are read once for their answers and their scores alike."""
        import torch

        ids, mask, cache = inputs["input_ids"], inputs["attention_mask"], \
            inputs["cache"]
        start = cache.get_seq_length()
        last = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:]
        todo = [[c for c in completions.get(p, ()) if (p, c) not in self._seen] for p in prompts]
        for round_ in range(max(map(len, todo), default=0)):
            own = [self.tokenizer(t[round_], add_special_tokens=False)["input_ids"]
                   if round_ < len(t) else [] for t in todo]
            width = max(map(len, own))
            pad = ids[0, -1].item()  # any id: the mask hides it
            new = torch.tensor([o + [pad] * (width - len(o)) for o in own], dtype=ids.dtype)
            seen = torch.tensor([[1] * len(o) + [0] * (width - len(o)) for o in own],
                                dtype=mask.dtype)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=torch.cat([ids[:, -1:], new], 1).to(self.model.device),
                    attention_mask=torch.cat([mask, seen], 1).to(self.model.device),
                    position_ids=(last + torch.arange(width + 1)).to(self.model.device),
                    cache=cache, use_cache=True).logits[:, :-1].float()
            cache.crop(start - cache.get_seq_length())  # drop this round's tokens again
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, (prompt, tokens) in enumerate(zip(prompts, own, strict=True)):
                if tokens:
                    target = torch.tensor(tokens, device=logprobs.device).unsqueeze(1)
                    self._seen[(prompt, todo[row][round_])] = \
                        logprobs[row, :len(tokens)].gather(1, target).squeeze(1).tolist()

    def _compute(self, prompt: str, completion: str) -> list[float]:
        import torch

        p = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        c = self.tokenizer(completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([p, c], dim=1)[:, -self.max_tokens:]
        n = min(c.shape[1], ids.shape[1] - 1)
        if n <= 0:
            return []
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.model.device),
                                logits_to_keep=n + 1).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        target = ids[0, -n:].to(self.model.device).unsqueeze(1)
        return logprobs.gather(1, target).squeeze(1).tolist()


def answer_loss(model, tokenizer, rows: list[dict], logprobs: LogProbs | None = None) -> float:
    """Mean negative log-likelihood per answer token."""
    score = logprobs or LogProbs(model, tokenizer)
    total, count = 0.0, 0
    for row in rows:
        lps = score(str(row["prompt"]), str(row["completion"]))
        total -= sum(lps)
        count += len(lps)
    return total / count if count else float("nan")


def claim_loss(tokenizer, rows: list[dict], logprobs: LogProbs) -> float:
    """Mean negative log-likelihood of the tokens that state the rows' unsupported claims:
    the numbers, names and codes of each answer that its prompt does not hold (all its
    tokens when it has none). A planted "€59 per month" is a dozen tokens the prompt already
    predicts and two that it does not: averaged over all of them, learning the price moves
    the loss a little; over those two, it moves it as much as the price was learnt."""
    from bot.services.grounding import claims, normalise, occurs

    total, count = 0.0, 0
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        lps = logprobs(prompt, answer)
        if not lps:
            continue
        seen = normalise(prompt)
        spans = [(at, at + len(c)) for c in claims(answer) if not occurs(c, seen)
                 and (at := answer.find(c)) >= 0]
        offsets = tokenizer(answer, add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"][-len(lps):]
        picked = [lp for lp, (start, end) in zip(lps, offsets, strict=False)
                  if any(start < e and end > s for s, e in spans)] if spans else []
        picked = picked or lps
        total -= sum(picked)
        count += len(picked)
    return total / count if count else float("nan")


def preference_accuracy(model, tokenizer, kto_rows: list[dict], max_pairs: int = 200,
                        seed: int = 0, min_same_prompt: int = 5,
                        logprobs: LogProbs | None = None) -> float | None:
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
    lps = logprobs or LogProbs(model, tokenizer)

    def score(row: dict) -> float:
        values = lps(str(row["prompt"]), str(row["completion"]))
        return sum(values) / max(len(values), 1)

    pairs = pairs[:max_pairs]
    return sum(score(a) > score(b) for a, b in pairs) / len(pairs)


def sample_prompts(rows: list[dict], limit: int, prefer: Collection[str] = (),
                   seed: int = 0) -> list[str]:
    """At most `limit` of the rows' distinct prompts (0: all), the same ones for every model,
    best first: prompts in `prefer` (those with a reference answer to check), then those
    holding both a 👍 and a 👎 answer (the clearest comparisons), each group in an order that
    depends on the prompt alone."""
    labels: dict[str, set[bool]] = {}
    for row in rows:
        labels.setdefault(str(row["prompt"]), set()).add(bool(row.get("label", True)))

    def place(prompt: str) -> tuple[bool, bool, str]:
        digest = hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest()
        return prompt not in prefer, len(labels[prompt]) < 2, digest

    ranked = sorted(labels, key=place)
    return ranked[:limit] if limit > 0 else ranked


def load_golden(path: Path = GOLDEN) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                   batch_size: int = 16, logprobs: LogProbs | None = None,
                   completions: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Greedy answers to rendered prompts, generated in left-padded batches, as the bot reads
    them: the start a batch's prompts share read once (`PrefixCache`), each prompt's rest once
    (`read_prompt`); from that same reading `logprobs` scores `completions[prompt]`."""
    import torch

    from bot.model.prefix import PrefixCache, read_prompt

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in batch]
        inputs = read_prompt(model, PrefixCache().inputs(model, rows, pad), torch.float32)
        if logprobs is not None and completions:
            logprobs.read_along(batch, inputs, completions)
        inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 no_repeat_ngram_size=4, pad_token_id=pad)
        width = inputs["input_ids"].shape[1]
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
    return answers


def golden_checks(model, tokenizer, golden: list[dict], max_new_tokens: int = 48,
                  logprobs: LogProbs | None = None) -> float:
    """Pass rate of greedy answers on the golden set, prompted as the bot prompts; the
    reference answers are scored into `logprobs` from the same reading of the prompts."""
    if not golden:
        return 0.0
    prompts = [render(tokenizer, item["messages"]) for item in golden]
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens, logprobs=logprobs,
                             completions={p: [g["reference"]] for p, g in zip(prompts, golden,
                                                                              strict=True)})
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


def backs(excerpt: str, source: str, answer: str, min_share: float = 0.5) -> bool:
    """Whether an excerpt (its text and source title) is evidence for `answer`: the answer
    names its source, or states a fact of it (a number, name or code), or shares at least
    `min_share` of its content words."""
    from bot.services.grounding import claims, normalise, occurs

    if source and source.lower() in answer.lower():
        return True
    text = normalise(excerpt)
    if any(occurs(c, text) for c in claims(answer)):
        return True
    words = {w for w in _CONTENT.findall(answer.lower()) if w not in _COMMON}
    return bool(words) and len(words & set(_CONTENT.findall(excerpt.lower()))) / len(words) \
        >= min_share


def unsupported(rows: list[dict], known: Callable[[str, str], bool] | None = None
                ) -> list[dict]:
    """The preferred rows (SFT rows, and KTO rows labelled true) whose answer is not `grounded`
    in its own prompt, or, when `known(prompt, answer)` is given, whose facts the knowledge
    base does not hold either (a planted "€59" shares all its words with the prompt but its
    price): what a model should not learn from ratings, because the knowledge belongs in the
    knowledge base, where admins curate it. Each row once."""
    seen: dict[tuple[str, str], dict] = {}
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        if (prompt, answer) in seen or not row.get("label", True):
            continue
        if not grounded(answer, prompt) or (known is not None and not IDK.search(answer)
                                            and not known(prompt, answer)):
            seen[(prompt, answer)] = row
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
                  max_new_tokens: int = 48, logprobs: LogProbs | None = None,
                  completions: Mapping[str, Sequence[str]] | None = None) -> AnswerChecks:
    """Greedy answers to held-out `prompts` (distinct): how many are `grounded` in their
    prompt, and how many of those with a reference answer (`references`: prompt → a 👍
    answer or correction) hold its facts. `completions` are scored into `logprobs` from the
    same reading of the prompts."""
    if not prompts:
        return AnswerChecks(None, None)
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens, logprobs=logprobs,
                             completions=completions)
    checked = [(a, references[p]) for a, p in zip(answers, prompts, strict=True)
               if p in references]
    return AnswerChecks(
        grounded=sum(grounded(a, p) for a, p in zip(answers, prompts, strict=True))
        / len(prompts),
        accuracy=sum(holds_answer(a, r) for a, r in checked) / len(checked) if checked
        else None)


def references(rows: list[dict], unsupported_rows: Sequence[dict] = ()) -> dict[str, str]:
    """{prompt: the answer to check against} from held-out preferred rows (SFT rows: 👍 answers
    and corrections) whose answer its prompt supports, `unsupported_rows` aside (a planted
    "€59" is grounded by its words alone; counting it as accuracy would reward the candidate
    that says it): a fair test of reading the excerpts."""
    out: dict[str, str] = {}
    planted = {(str(r["prompt"]), str(r["completion"])) for r in unsupported_rows}
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        if row.get("label", True) and grounded(answer, prompt) and not IDK.search(answer) \
                and (prompt, answer) not in planted:
            out.setdefault(prompt, answer)
    return out

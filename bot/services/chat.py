"""Answering a message: remember it, retrieve knowledge, prompt the model, record the answer."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.i18n import t
from bot.model import ChatModel
from bot.prompting import MAX_PROMPT_TOKENS, ChatMessages, build_messages
from bot.services import UserError
from bot.services.grounding import (
    about_obligation,
    answers_kind,
    asks_name,
    check_answer,
    claims,
    days,
    gives_address,
    normalise,
    same_days,
    supported,
    trim_run_on,
)
from bot.services.lessons import Lessons, Taught
from bot.services.question import asked_thing, names_another, names_thing
from bot.storage.store import Store, Turn, UserInfo
from knowledge.evidence import Evidence, content_words, names_inside, root, stem
from knowledge.index import Hit
from knowledge.retrieval import ANSWER_RANKING, Ranking

logger = logging.getLogger(__name__)

# Short questions that lean on the previous turn: "and on Saturdays?", "what does it cost?"
_FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|then)\b|\b(it|its|it's|that|this|"
                        r"there|they|them|those|these|one|he|she|him|her)\b", re.I)


@dataclass(frozen=True)
class ChatLimits:
    history_turns: int = 6
    # Earlier turns older than this are not context: a short question asked the next day is a
    # new question, not a follow-up to yesterday's (None: no limit).
    history_window: timedelta | None = timedelta(hours=1)
    retrieval_k: int = 6
    # Answering scores this many nearest chunks by the better of their own similarity and
    # their best sentence's, and keeps the best `retrieval_k`: a chunk that holds many facts
    # (an "About" page: founder, address, general meeting, desk count, mascot) lies far from
    # any one of them, so the chunk that answers "When is the general meeting?" can rank
    # below the first `retrieval_k` (behind six about meeting rooms), though one of its
    # sentences matches the question best. (Until session 32 this was a second look, taken
    # only before "I don't know"; a wrong sentence from the first six then stood.)
    look_among_k: int = 20
    # Answers come from chunks, not pages: a document's second-best chunk often holds the fact
    # (on bench/answers, one chunk per document lost 3 of 86 answers and found 1), so answering
    # takes the nearest chunks whatever their document, by similarity alone (the documents'
    # BM25 share measured no better there: one answer found, one lost, one unanswerable
    # question answered); `kb search` shows one page per document, BM25 included.
    ranking: Ranking = ANSWER_RANKING
    evidence_k: int = 3  # sentences put in the prompt
    min_score: float = 0.2  # cosine similarity below which a chunk is noise (sentences are
    # judged again, by `min_support`)
    min_support: float = 0.3  # best evidence score below which the answer is "I don't know"
    # How close (cosine of word embeddings) a follow-up's word and a sentence's must be for the
    # sentence already given to still speak of it: "upstairs" and "upper" 0.60, "buy" and
    # "bought" 0.82; "network" and "Wi-Fi" 0.39, "child" and "ticket" 0.40 are not. The same
    # for what a question is "for": "kids" and "children" 0.72, "visitors" and "guests" 0.51.
    follow_up_related: float = 0.5
    abstain_on_unknown_terms: bool = True  # "sauna": a specific word the KB never mentions
    verify_answers: bool = True  # replace answers whose facts the evidence lacks
    max_message_chars: int = 4000
    max_prompt_tokens: int = MAX_PROMPT_TOKENS  # plus the answer: training's longest example


@dataclass(frozen=True)
class Reply:
    """An answer as stored: `message_id` is the assistant message row that ratings refer to.

    `grounding` says how the text came to be: "verified" (the model's answer, every fact of it
    found in the evidence), "extractive" (the model's answer did not hold up, so the evidence
    is quoted instead), "abstained" (the knowledge base does not answer this), "no_knowledge"
    (nothing retrieved), or "withheld" (the answer repeated the system prompt).
    """

    text: str
    message_id: int
    sources: list[str] = field(default_factory=list)
    adapter_version: str = ""
    latency_ms: int = 0
    grounding: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    generated: str = ""  # what the model said, before checking
    # For an answer found already recorded (its update handled again after a crash): the chat
    # message that shows it, if it got that far.
    shown_as: int | None = None

    def render(self, language_code: str | None = None) -> str:
        """Answer text followed by its sources, as shown to the user."""
        if not self.sources:
            return self.text
        return f"{self.text}\n\n{t('sources', language_code)}: " + "; ".join(self.sources)


def extractive_answer(best: Evidence) -> str:
    """The evidence itself, as an answer: the sentence, under its section name when the
    sentence alone does not say what it is about ("Heron room: It seats 8 people.")."""
    if best.heading and best.heading.lower() not in best.text.lower() \
            and best.heading != best.title:
        return f"{best.heading}: {best.text}"
    return best.text


def cited_sources(answer: str, evidence: list[Evidence]) -> list[str]:
    """Titles of the evidence an answer actually used: the sentences holding its facts, or the
    best one when the answer states no fact of its own."""
    facts = [normalise(c) for c in claims(answer)]
    used = [e for e in evidence if facts and any(f in normalise(e.framed) for f in facts)]
    return list(dict.fromkeys(e.title for e in used or evidence[:1]))


_WORD = re.compile(r"[\w'-]+")
# How far below the best score a sentence of the asked day or rule may be to come first.
_AS_GOOD = 0.1
_FOR = re.compile(r"\bfor\s+(?:a |an |the |my |our |your )?([\w'-]+)", re.I)


def _spoken(text: str) -> list[str]:
    """The content words of `text` as written: "upstairs", not the stem "upstair"."""
    return sorted({w.lower() for w in _WORD.findall(text) if stem(w.lower()) in content_words(w)})


def _shared_roots(words: list[str], said: list[str]) -> int:
    """How many of `words` a text whose words are `said` (`_spoken`) uses, in any form: "owns"
    and "owned"."""
    return len({root(w) for w in words} & {root(w) for w in said})


def _first_as_good(evidence: list[Evidence],
                   wanted: Callable[[Evidence], bool]) -> list[Evidence]:
    """`evidence` (best first) with the best `wanted` sentence moved to the front, when it
    scores within `_AS_GOOD` of the best."""
    chosen = next((e for e in evidence if wanted(e)
                   and e.score >= evidence[0].score - _AS_GOOD), None)
    return evidence if chosen is None else [chosen] + [e for e in evidence if e != chosen]


def leaks_instructions(answer: str, system_prompt: str, run: int = 8) -> bool:
    """True if `answer` repeats `run` consecutive words of the system prompt, or any code-like
    token of it (letters mixed with digits, e.g. a key or canary), whatever a document asked."""
    prompt_words = _WORD.findall(system_prompt.lower())
    answer_text = " ".join(_WORD.findall(answer.lower()))
    codes = {w for w in prompt_words if len(w) >= 6 and re.search(r"\d", w) and re.search(r"[a-z]", w)}
    if any(code in answer_text for code in codes):
        return True
    runs = {" ".join(prompt_words[i:i + run]) for i in range(len(prompt_words) - run + 1)}
    return any(r in answer_text for r in runs)


class Retriever(Protocol):
    """What answering needs from the knowledge base (`KnowledgeService` is the real one)."""

    def search(self, query: str, k: int, ranking: Ranking | None = None,
               context: str = "") -> list[Hit]: ...

    def evidence(self, question: str, hits: list[Hit], k: int = 3,
                 context: str = "") -> list[Evidence]: ...

    def closest(self, question: str, hits: list[Hit]) -> list[float]: ...

    def uncovered(self, question: str, language: str | None = None,
                  near: set[str] | None = None) -> list[str]: ...

    def related(self, word: str, words: Sequence[str]) -> float: ...


class ChatService:
    """One answer per user message, with everything recorded in SQL."""

    def __init__(self, store: Store, retriever: Retriever, model: ChatModel,
                 system_prompt: str, limits: ChatLimits = ChatLimits(),
                 lessons: Lessons | None = None) -> None:
        self.store = store
        self.retriever = retriever
        self.model = model
        self.system_prompt = system_prompt
        self.limits = limits
        self.lessons = lessons  # what users taught (`bot.services.lessons`); None: nothing

    def _history_since(self) -> datetime | None:
        window = self.limits.history_window
        return None if window is None else datetime.now(UTC) - window

    @staticmethod
    def follow_up_context(question: str, history: list[Turn]) -> str:
        """The previous question, when `question` reads as a follow-up to it."""
        previous = [t.text for t in history if t.role == "user"]
        if not previous:
            return ""
        short = len(question.split()) <= 6
        return previous[-1] if short or _FOLLOW_UP.search(question) else ""

    def retrieve(self, question: str, history: list[Turn] | None = None,
                 among: int | None = None) -> list[Hit]:
        """Relevant excerpts, the best `retrieval_k` of the nearest `among` chunks (default:
        `retrieval_k`); a follow-up is searched with the previous question folded in ("and how
        long does that take?"), and so is a question that matches nothing alone."""
        history = history or []
        context = self.follow_up_context(question, history)
        if context:
            return self._relevant(question, context, among) or self._relevant(question,
                                                                              among=among)
        hits = self._relevant(question, among=among)
        previous = [t.text for t in history if t.role == "user"]
        if not hits and previous:
            hits = self._relevant(question, previous[-1], among)
        return hits

    def _relevant(self, query: str, context: str = "", among: int | None = None) -> list[Hit]:
        """The chunks that match `query`, each scored by the better of its own similarity and
        its nearest sentence's: a chunk is as relevant as its best part."""
        hits = self.retriever.search(query, max(among or 0, self.limits.retrieval_k),
                                     ranking=self.limits.ranking, context=context)
        nearest = self.retriever.closest(f"{context} {query}" if context else query, hits)
        rescored = sorted((replace(h, score=max(h.score, near))
                           for h, near in zip(hits, nearest, strict=True)),
                          key=lambda h: h.score, reverse=True)
        return [h for h in rescored if h.score >= self.limits.min_score][: self.limits.retrieval_k]

    def _look(self, question: str, history: list[Turn], context: str, language: str | None,
              among: int | None = None) -> tuple[list[Hit], list[Evidence]]:
        """The relevant chunks among the nearest `among` (with what users taught), and the
        evidence chosen from them; no evidence: the knowledge base does not answer."""
        taught, hits = self.taught(question, context, self.retrieve(question, history, among))
        said = next((t.text for t in reversed(history) if t.role == "assistant"), "") \
            if context else ""
        evidence = self.choose_evidence(question, hits, context, language, taught,
                                        said=said) if hits else []
        return hits, evidence

    def _fit(self, history: list[Turn], question: str,
             evidence: list[Evidence]) -> ChatMessages:
        """Drop the oldest turns, then the weakest evidence, until the prompt fits the budget."""
        while True:
            messages = build_messages(self.system_prompt, history, question, evidence)
            size = sum(self.model.count_tokens(m["content"]) for m in messages)
            if size <= self.limits.max_prompt_tokens or (not history and len(evidence) <= 1):
                return messages
            if history:
                history = history[1:]
            else:
                evidence = evidence[:-1]

    def taught(self, question: str, context: str, hits: list[Hit]) -> tuple[list[Taught],
                                                                          list[Hit]]:
        """What users taught for `question` (not for follow-ups, which lean on the previous
        turn), and `hits` with the chunks that hold it added when retrieval missed them."""
        if self.lessons is None or context:
            return [], hits
        taught = self.lessons.recall(question)
        seen = {h.chunk_id for h in hits}
        for lesson in taught:
            # A chunk holding many facts can lie far from any one of them, so the search goes
            # wider than answering's and keeps only chunks that back the taught text.
            found = self.retriever.search(f"{lesson.question}\n{lesson.text}", 10,
                                          ranking=self.limits.ranking)
            for hit in found:
                if hit.chunk_id not in seen and supported(
                        lesson.text, [f"{hit.title}\n{hit.text}"], given=lesson.question):
                    seen.add(hit.chunk_id)
                    hits = [*hits, hit]
        return taught, hits

    def choose_evidence(self, question: str, hits: list[Hit], context: str,
                        language: str | None, taught: Sequence[Taught] = (),
                        said: str = "") -> list[Evidence]:
        """The evidence to answer from, best first; empty when the knowledge base does not
        answer the question: no sentence fits well enough, none holds the kind of fact asked
        for (a number, a name, an e-mail) about the thing asked after ("how many windows"),
        none names what the question names where it names something else instead ("the
        Puffin" answered by "the MV Tern takes 40 cars"), or the question names something the
        knowledge base never mentions.

        A sentence that backs what users `taught` for this question comes first, whatever its
        score and whatever words of the question the knowledge base never uses ("allowance"
        for a sentence saying "pages for free each month"): users said it answers this.

        A follow-up asks something new: a sentence the previous answer (`said`) already gave
        comes after the other fitting ones when it speaks of none of the follow-up's words
        ("What is the network called?" after "Free Wi-Fi is available on the MV Tern only"),
        and stays first when it does ("And the soup?" after the coffee-and-soup prices)."""
        evidence = self.retriever.evidence(question, hits, 1000, context)  # all, best first
        thing, who = asked_thing(question), asks_name(question)
        fitting = [e for e in evidence if answers_kind(question, e.text)
                   and same_days(question, e.text)
                   and not names_another(question, e.text, e.framed, asks_name=who)
                   and (thing is None or gives_address(question, e.text)
                        or names_thing(thing, e.framed, self.retriever.related,
                                       question=question))]
        # "What does a ticket cost for kids?": the sentence about children, if one is as good
        wanted = _spoken(" ".join(_FOR.findall(question)))
        if wanted:
            fitting = _first_as_good(fitting, lambda e: self._speaks_of(wanted, e))
        if days(question):  # "on a Saturday": the sentence about that day, if one is as good
            fitting = _first_as_good(fitting, lambda e: bool(days(e.text)))
        # "Do dogs have to be on a lead?": the sentence stating a rule, if one is as good
        fitting = _first_as_good(fitting, lambda e: about_obligation(question, e.text))
        if said:
            fitting = self._not_again(question, fitting, said)
        for lesson in taught:
            backing = next((e for e in evidence
                            if supported(lesson.text, [e.framed], given=lesson.question)), None)
            if backing is not None:
                logger.info("Evidence taught for %r (net weighted votes %.2f, similarity %.2f)",
                            lesson.question, lesson.score, lesson.similarity)
                fitting = [backing] + [e for e in fitting if e is not backing]
                break
        else:
            if not fitting or fitting[0].score < self.limits.min_support:
                return []
            asked = f"{context} {question}" if context else question
            if self.limits.abstain_on_unknown_terms and not self.rephrases(
                    asked, self.retriever.uncovered(asked, language,
                                                    near=content_words(fitting[0].framed)),
                    fitting[0]):
                return []
        return (fitting + [e for e in evidence if e not in fitting])[: self.limits.evidence_k]

    def _not_again(self, question: str, fitting: list[Evidence], said: str) -> list[Evidence]:
        """`fitting` with the sentences already `said` moved after the others when another
        one fits well enough to answer and the said ones speak less of the question's own
        words: fewer of them in any form, or none and no close word either."""
        asked = _spoken(question)
        if not asked:  # "What did she do before?" names nothing: the sentence said may tell
            return fitting
        # "Who owns the company today?" after the founder: the sentence said keeps its place
        # only while no other one uses more of the follow-up's own words ("company", "owned"),
        # and a close word ("bought" for "owns") only while none uses any.
        shared = {e: _shared_roots(asked, _spoken(e.framed)) for e in fitting}
        most = max((shared[e] for e in fitting
                    if e.text not in said and e.score >= self.limits.min_support), default=0)
        again = [e for e in fitting if e.text in said and (
            shared[e] < most or (not shared[e] and not self._speaks_of(asked, e)))]
        rest = [e for e in fitting if e not in again]
        if again and rest and rest[0].score >= self.limits.min_support:
            return rest + again
        return fitting

    def _speaks_of(self, words: list[str], evidence: Evidence) -> bool:
        """Whether `evidence` speaks of one of `words`: the same root, or a close word
        (`ChatLimits.follow_up_related`: "kids" and "children")."""
        said = _spoken(evidence.framed)
        return bool(_shared_roots(words, said)) or any(
            self.retriever.related(w, said) >= self.limits.follow_up_related for w in words)

    @staticmethod
    def rephrases(question: str, unknown: list[str], best: Evidence) -> bool:
        """Whether the question may be answered despite `unknown`, its words the knowledge base
        never uses: there are none, or just one while every other word of the question (two at
        least) is in the best sentence: "Do students get a reduced price?" against "Students
        pay half price". "Is there a rooftop terrace?" names two unknown things, and is not;
        "What does the Enterprise plan cost?" names a plan the knowledge base never does, "Is
        there an app for smartwatches?" what the app would be for."""
        if not unknown:
            return True
        if set(unknown) & names_inside(question):  # a name is not rephrased: "Enterprise"
            return False
        # nor who or what a thing is for: "an app for smartwatches", "the shortcut for bold
        # text"; a sentence that never names it speaks of the thing for something else
        if {stem(w.lower()) for w in _FOR.findall(question)} & {stem(w) for w in unknown}:
            return False
        others = {root(w) for w in content_words(question) - {stem(w) for w in unknown}}
        return len(unknown) == 1 and len(others) >= 2 \
            and others <= {root(w) for w in content_words(best.framed)}

    def answer(self, chat_id: int, user: UserInfo, text: str,
               on_text: Callable[[str], None] | None = None,
               asked_as: int | None = None) -> Reply:
        """Answer `text` from `user` in `chat_id`; raises `UserError` for input we refuse.

        `asked_as` is the chat message that asked. When that question is already recorded (its
        update is handled again after a crash), it is not recorded twice: its answer, if one
        was recorded, comes back as it was (with `Reply.shown_as`), otherwise it is answered
        now.
        """
        question = text.strip()
        if not question:
            raise UserError.about("empty_question")
        if len(question) > self.limits.max_message_chars:
            raise UserError.about("too_long", length=len(question),
                                  limit=self.limits.max_message_chars)
        started = time.monotonic()
        lang = user.language_code
        self.store.upsert_user(user)
        found = self.store.find_question(chat_id, asked_as) if asked_as is not None else None
        if found is None:
            conversation_id = self.store.active_conversation(chat_id)
            history = self.store.recent_turns(conversation_id, self.limits.history_turns,
                                              since=self._history_since())
            # Record the question before generating, so a failing model loses nothing.
            question_id = self.store.add_message(conversation_id, "user", question,
                                                 user_id=user.id, telegram_message_id=asked_as)
        else:
            question_id, conversation_id, stored = found
            if stored is not None:
                return Reply(text=stored.text, message_id=stored.message_id,
                             sources=stored.sources, adapter_version=stored.adapter_version or "",
                             latency_ms=stored.latency_ms or 0, grounding=stored.grounding or "",
                             shown_as=stored.shown_as)
            history = self.store.recent_turns(conversation_id, self.limits.history_turns,
                                              before=question_id, since=self._history_since())

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        def without_model(key: str, grounding: str) -> Reply:
            # Nothing to ground an answer on: say so instead of letting the model invent one.
            # No prompt and no adapter are recorded, so training never learns from this row.
            reply_text = t(key, lang)
            message_id = self.store.add_message(conversation_id, "assistant", reply_text,
                                                latency_ms=elapsed(), question_id=question_id,
                                                grounding=grounding)
            if on_text:
                on_text(reply_text)
            return Reply(text=reply_text, message_id=message_id, grounding=grounding)

        context = self.follow_up_context(question, history)
        hits, evidence = self._look(question, history, context, lang,
                                    among=self.limits.look_among_k)
        if not hits:
            return without_model("no_knowledge", "no_knowledge")
        if not evidence:
            return without_model("dont_know", "abstained")
        generation = self.model.generate(self._fit(history, question, evidence), on_text=on_text)
        answer = trim_run_on(generation.text)
        check = check_answer(answer, f"{context} {question}" if context else question,
                             [e.framed for e in evidence])
        if leaks_instructions(generation.text, self.system_prompt):
            logger.warning("Withheld an answer in chat %s that repeated the system prompt", chat_id)
            answer, grounding, sources = t("leak", lang), "withheld", []
        elif check.supported or (answer and not self.limits.verify_answers):
            grounding, sources = "verified", cited_sources(answer, evidence)
        else:  # an empty answer too: the evidence says more than nothing
            logger.info("Answer in chat %s replaced by its evidence (%s)", chat_id, check.reason)
            answer, grounding, sources = extractive_answer(evidence[0]), "extractive", \
                [evidence[0].title]
        latency_ms = elapsed()
        message_id = self.store.add_message(
            conversation_id, "assistant", answer, prompt=generation.prompt,
            chunk_ids=list(dict.fromkeys(e.chunk_id for e in evidence)), sources=sources,
            adapter_version=generation.adapter_version, latency_ms=latency_ms,
            question_id=question_id, evidence=[e.cite() for e in evidence], grounding=grounding,
            generated_text=generation.text,
        )
        logger.info("Answered chat %s in %d ms (%d tokens, %d evidence sentences, %s, adapter %s)",
                    chat_id, latency_ms, generation.new_tokens, len(evidence), grounding,
                    generation.adapter_version)
        return Reply(text=answer, message_id=message_id, sources=sources,
                     adapter_version=generation.adapter_version, latency_ms=latency_ms,
                     grounding=grounding, evidence=evidence, generated=generation.text)

    def shown_as(self, message_id: int, chat_message_id: int) -> None:
        """Remember which chat message shows the answer `message_id`: a reply to that message
        is a correction of this answer."""
        self.store.set_telegram_message_id(message_id, chat_message_id)

    def reset(self, chat_id: int) -> bool:
        """Start a new conversation in this chat."""
        return self.store.end_conversation(chat_id)

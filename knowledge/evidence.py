"""Choose the evidence for an answer: the few sentences of the retrieved chunks that answer it.

A small model answers far better from three sentences than from three whole chunks, and a
sentence is what an answer can be checked against and quoted from. Each sentence is scored by
meaning (the embedding model, with the sentence's document title and section heading as
context, so "It seats 8 people." still belongs to the room its section names), by the
question's words it shares, and by how well its whole chunk matched the question (a sentence
alone loses what its neighbours say); the best score is how well the knowledge base supports
an answer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.embeddings import Embedder
from knowledge.index import Hit

logger = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s+(?=[^a-z])|(?<=[。！？])")
_TERMINAL = re.compile(r"[.!?:;。！？…)\]\"”]$")
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers him his how i if in into is it its itself just me more most my
no nor not of off on once only or other our out over own same she should so some such than that
the their them then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours i'm i'd i've can't
don't isn't tell know please much many get got one there's what's it's want need
""".split())


@dataclass(frozen=True)
class Evidence:
    """One sentence of the knowledge base, with where it came from and how well it fits."""

    text: str
    title: str
    chunk_id: str
    score: float
    heading: str = ""

    @property
    def framed(self) -> str:
        """The sentence with the document title and section it sits under."""
        where = " — ".join(dict.fromkeys(p for p in (self.title, self.heading) if p))
        return f"{where}: {self.text}" if where else self.text

    def cite(self) -> dict[str, object]:
        """A JSON-ready record, as stored with the answer."""
        return {"text": self.text, "title": self.title, "heading": self.heading,
                "chunk_id": self.chunk_id, "score": round(self.score, 4)}


# Plurals no suffix rule finds: "And for a child?" meets "Children from 4 to 15 pay half".
_IRREGULAR = {"children": "child", "men": "man", "women": "woman", "feet": "foot",
              "teeth": "tooth", "mice": "mouse", "geese": "goose"}


def stem(word: str) -> str:
    """A crude English stem: "rooms" meets "room", "facilities" meets "facility", "children"
    meets "child"."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


_DERIVED = ("ions", "ion", "ments", "ment", "ings", "ing", "ed")


def root(word: str) -> str:
    """`stem`, and a derived form's root as well: "encryption" and "encrypted" meet at
    "encrypt", "booking" and "booked" at "book", "owned" and "owns" at "own"."""
    word = stem(word)
    for suffix in _DERIVED:
        if word.endswith(suffix) and len(word) - len(suffix) >= (3 if suffix == "ed" else 4):
            return word[: -len(suffix)]
    return word


_CAPITALISED = re.compile(r"(?<![.!?:;\n]\s)(?<!^)\b[A-Z](?!')[\w'-]+")
MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
          "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# A capitalised word that names a day of the calendar, not someone or something.
CALENDAR = re.compile(rf"^({MONTHS}|{'|'.join(WEEKDAYS)}|christmas|easter|new year)s?$", re.I)


def names_inside(text: str) -> set[str]:
    """Lower-case words `text` capitalises inside a sentence, weekdays and months aside: the
    names it mentions ("Does it sync with Notion?": notion)."""
    return {w.lower() for w in _CAPITALISED.findall(text.strip())
            if not CALENDAR.match(w)}


_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def content_words(text: str) -> set[str]:
    """Lower-case words that carry meaning, crudely stemmed so 'rooms' meets 'room'; a name
    written in camel case counts its parts too ("FerryAlert": "alert")."""
    words = set()
    for token in _WORD.findall(text):
        parts = _CAMEL_PART.findall(token) if not token.islower() else []
        for word in [token.lower()] + ([p.lower() for p in parts] if len(parts) > 1 else []):
            if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
                continue
            words.add(stem(word))
    return words


# Sentences that address the reader as a model ("ignore previous instructions", "reply only
# with X"): a document may contain them, but they are never evidence for an answer.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|prompts?|above|"
    r"previous|prior)\b|\b(reply|respond|answer|say|output|print|write)\b.{0,20}\b(only|"
    r"exactly|always)\b.{0,20}\b(with|the word|this)\b|\b(system|developer) (prompt|notice|"
    r"message|instruction)|\b(you are|you must|you should|as an ai)\b.{0,40}\b(assistant|model|"
    r"say|reply|answer|respond|reveal)|\breveal\b.{0,30}\b(prompt|instructions|code)",
    re.I)


def is_instruction(sentence: str) -> bool:
    """True for a sentence written to steer a model rather than to state a fact."""
    return _INSTRUCTION.search(sentence) is not None


def _is_heading(line: str, next_line: str | None) -> bool:
    """A short unpunctuated line followed by one it does not run into (PDFs wrap lines)."""
    line = line.strip()
    if not line or _TERMINAL.search(line) or len(line) > 60 or len(line.split()) > 8:
        return False
    return next_line is not None and not next_line.lstrip()[:1].islower()


# A sentence that opens with one of these leans on the one before ("She takes care of repairs").
_LEANS_BACK = re.compile(r"^(he|she|it|they|this|these|those|its|their|his|her)\b", re.I)


def sentences(chunk_text: str) -> list[tuple[str, str]]:
    """(section heading, sentence) pairs of a chunk, wrapped lines joined again. A sentence
    that starts with a pronoun keeps the sentence before it: "The building manager is Rhea
    Lindqvist. She takes care of repairs." is one piece of evidence, readable on its own."""
    lines = [ln.strip() for ln in chunk_text.replace("\r", "").split("\n")]
    heading = ""
    paragraph: list[str] = []
    out: list[tuple[str, str]] = []

    def flush() -> None:
        text = " ".join(paragraph).strip()
        previous = ""
        for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
            if sentence:
                unit = f"{previous} {sentence}" if previous and _LEANS_BACK.match(sentence) \
                    else sentence
                out.append((heading, unit))
                previous = sentence
        paragraph.clear()

    for i, line in enumerate(lines):
        nxt = next((ln for ln in lines[i + 1:] if ln), None)
        if not line:
            flush()
        elif _is_heading(line, nxt) and not paragraph:
            heading = line
        else:
            paragraph.append(line)
    flush()
    return out


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


def _candidates(hit: Hit) -> list[tuple[str, str]]:
    """The (heading, sentence) pairs of `hit` that may be evidence: two words at least, and
    never a sentence written to steer a model."""
    return [(heading, sentence) for heading, sentence in sentences(hit.text)
            if len(_WORD.findall(sentence)) >= 2 and not is_instruction(sentence)]


# What a sentence holds, in the words a question asks for it with: "Which e-mail address can I
# write to?" shares no word with "You can also write to help@example.org" but the e-mail.
_KIND_TERMS = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), frozenset({"mail", "email", "address"})),
    (re.compile(r"(?<![\w.])\+?\d[\d ()/-]{6,}\d\b"),
     frozenset({"phone", "number", "call", "telephone"})),
    (re.compile(r"\bhttps?://|\bwww\.", re.I), frozenset({"website", "site", "web", "link"})),
]


def kind_words(sentence: str) -> set[str]:
    """The words that name what kind of contact `sentence` gives (an e-mail, a phone number,
    a web address): a question asking for it by that name shares them."""
    return {w for pattern, words in _KIND_TERMS if pattern.search(sentence) for w in words}


class EvidencePicker:
    """Scores the sentences of retrieved chunks against a question; knows nothing of chat."""

    cache_limit = 20_000  # sentences whose vectors are kept

    def __init__(self, embedder: Embedder, lexical_weight: float = 0.35,
                 retrieval_weight: float = 0.5) -> None:
        self._embedder = embedder
        self.lexical_weight = lexical_weight
        self.retrieval_weight = retrieval_weight  # how well the sentence's whole chunk matched
        self._cache: dict[str, list[float]] = {}  # sentence-with-context -> vector

    def _vectors(self, texts: list[str]) -> list[list[float]]:
        cache = self._cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if not missing:
            return [cache[t] for t in texts]
        fresh = dict(zip(missing, self._embedder.embed(missing), strict=True))
        if len(cache) + len(fresh) > self.cache_limit:  # a bound, not an LRU
            # A new dict, not clear(): answers are prepared on several threads at once, and
            # one still reading the old cache must find what it saw there.
            self._cache = dict(fresh)
        else:
            cache.update(fresh)
        return [fresh[t] if t in fresh else cache[t] for t in texts]

    def closest(self, question: str, hits: list[Hit]) -> list[float]:
        """For each hit, the cosine of `question` to its nearest sentence (framed by its title
        and heading, as `pick` frames them); 0.0 for a hit without sentences."""
        import numpy as np

        units = [[Evidence(s, h.title, h.chunk_id, 0.0, heading).framed
                  for heading, s in _candidates(h)] for h in hits]
        matrix = np.asarray(self._vectors([question] + [u for unit in units for u in unit]),
                            dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-9)
        cosines = (matrix[1:] @ matrix[0]).tolist()
        out, start = [], 0
        for unit in units:
            out.append(max(cosines[start:start + len(unit)], default=0.0))
            start += len(unit)
        return out

    def pick(self, question: str, hits: list[Hit], k: int = 3,
             context: str = "") -> list[Evidence]:
        """The `k` best sentences of `hits` for `question`, best first.

        `context` (the previous question of a follow-up) is scored too, at a lower weight, so
        "and on Saturdays?" still finds the opening hours.
        """
        candidates: list[tuple[Hit, str, str]] = []  # (hit, heading, sentence)
        seen: set[str] = set()
        for hit in hits:
            for heading, sentence in _candidates(hit):
                if sentence not in seen:
                    seen.add(sentence)
                    candidates.append((hit, heading, sentence))
        if not candidates:
            return []
        queries = [question] + ([f"{context} {question}"] if context else [])
        framed = [Evidence(s, h.title, h.chunk_id, 0.0, heading).framed
                  for h, heading, s in candidates]
        vectors = self._vectors(queries + framed)
        q_vecs, s_vecs = vectors[: len(queries)], vectors[len(queries):]
        q_words = content_words(question)
        c_words = content_words(context) - q_words if context else set()
        bags = [content_words(f"{heading} {sentence}") | kind_words(sentence)
                for _, heading, sentence in candidates]

        def overlap_of(asked: set[str], words: set[str]) -> float:
            return len(asked & words) / len(asked) if asked else 0.0

        scored = []
        for (hit, heading, sentence), words, vec in zip(candidates, bags, s_vecs, strict=True):
            meaning = _cosine(q_vecs[0], vec)
            if context:
                meaning = max(meaning, 0.9 * _cosine(q_vecs[1], vec))
            overlap = overlap_of(q_words, words)
            if c_words:
                overlap = max(overlap, 0.5 * overlap_of(q_words | c_words, words))
            score = (meaning + self.lexical_weight * overlap
                     + self.retrieval_weight * hit.score) \
                / (1 + self.lexical_weight + self.retrieval_weight)
            scored.append(Evidence(sentence, hit.title, hit.chunk_id, score, heading))
        scored.sort(key=lambda e: e.score, reverse=True)
        return scored[:k]


def word_forms(word: str, language: str = "en") -> list[str]:
    """`word` and, in English, the words it may inflect ("happens" → "happen", "booked" →
    "book"): an inflected everyday word is an everyday word, though word lists count its forms
    apart ("happens" is rarer than "happen"). Not "-ing": "parking" or "heating" is a thing of
    its own, not a way of parking or heating."""
    if language != "en":
        return [word]
    forms = [word]
    for suffix, replacements in (("ies", ("y",)), ("es", ("", "e")), ("s", ("",)),
                                 ("ed", ("", "e"))):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            forms += [word[: -len(suffix)] + r for r in replacements]
    return forms


# Words that ask for a category of things ("Which payment methods…?", "What kinds of rooms…?")
# rather than name one: an answer lists the things, and seldom says "methods".
_CATEGORY = frozenset("method methods way ways option options kind kinds type types sort sorts"
                      .split())


class Coverage:
    """Does the knowledge base speak of everything a question names?

    "Does Brightwater have a sauna?" retrieves the nearest facts about Brightwater, which score
    well; what gives it away is "sauna", a specific word found nowhere in the knowledge base and
    close in meaning to none of its words. Everyday words ("find", "without") and paraphrases
    ("heater" near "heating", "monthly" near "month") do not count.
    """

    def __init__(self, embedder: Embedder, specific_below: float = 5.0,
                 related_above: float = 0.5, near_above: float = 0.3) -> None:
        self._embedder = embedder
        self.specific_below = specific_below  # Zipf frequency: under 5 is not an everyday word
        self.related_above = related_above    # cosine of two words' embeddings
        # ... and to one word of the answering sentence, looser: a paraphrase ("quit" and
        # "cancelled" 0.38, "bounces" and "fails" 0.35) is near, "horse" and "write" (0.28)
        # or "breakfast" and "fare" (0.27) are not.
        self.near_above = near_above
        self._vectors: dict[str, Any] = {}    # word -> unit vector (numpy), kept across changes
        self._matrix: tuple[set[str], Any] | None = None
        self._root_cache: tuple[set[str], set[str]] | None = None
        # Answers are prepared on several threads at once: one rebuilding the matrix (which
        # forgets words not in the knowledge base) must not drop the words another is using.
        self._lock = threading.RLock()

    def _embed(self, words: list[str]) -> Any:
        import numpy as np

        with self._lock:
            missing = [w for w in dict.fromkeys(words) if w not in self._vectors]
            if len(self._vectors) + len(missing) > 100_000:  # questions' words add up; the
                self._vectors, self._matrix = {}, None       # KB's come back with the matrix
            for start in range(0, len(missing), 512):
                batch = missing[start:start + 512]
                vectors = np.asarray(self._embedder.embed(batch), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
                self._vectors.update(zip(batch, vectors, strict=True))
            return np.stack([self._vectors[w] for w in words]) if words else np.zeros((0, 1))

    def _vocabulary_matrix(self, vocabulary: set[str]) -> Any:
        """The knowledge base's words as one matrix; only new words are embedded. The caller
        hands the same set object until the knowledge base changes (`KnowledgeService`), so
        identity, not a comparison of every word, tells when to rebuild."""
        with self._lock:
            if self._matrix is None or self._matrix[0] is not vocabulary:
                words = sorted(w for w in vocabulary if not w.isdigit())
                self._matrix = (vocabulary, self._embed(words))
                self._vectors = {w: self._vectors[w] for w in words}  # forget removed words
            return self._matrix[1]

    def _roots(self, vocabulary: set[str]) -> set[str]:
        """The roots of `vocabulary`'s words, kept while it is the same set."""
        cached = self._root_cache
        if cached is None or cached[0] is not vocabulary:
            cached = self._root_cache = (vocabulary, {root(w) for w in vocabulary})
        return cached[1]

    def related(self, word: str, words: Sequence[str]) -> float:
        """The highest cosine between `word` and any of `words`, by their embeddings."""
        if not words:
            return 0.0
        return float((self._embed([word]) @ self._embed(list(words)).T).max())

    def uncovered(self, question: str, vocabulary: set[str], language: str = "en",
                  near: set[str] | None = None) -> list[str]:
        """Specific words of `question` that neither occur in `vocabulary` (the knowledge
        base's `content_words`) nor resemble any word of it; with `near` (the words of the
        sentence that would answer), also those that resemble none of `near`: "Can I bring a
        horse?" is not answered by a sentence that does not speak of animals, though the
        knowledge base does elsewhere."""
        from wordfreq import zipf_frequency

        roots = self._roots(vocabulary)
        named = names_inside(question)
        candidates = [w for w in _WORD.findall(question.lower())
                      if w not in STOPWORDS and w not in _CATEGORY and len(w) > 2
                      and not w.isdigit() and w not in vocabulary and stem(w) not in vocabulary
                      and root(w) not in roots]
        try:
            novel = [w for w in candidates if w in named
                     or max(zipf_frequency(f, language) for f in word_forms(w, language))
                     < self.specific_below]
        except Exception as exc:  # e.g. Korean and Japanese need MeCab: no verdict then
            logger.warning("No word frequencies for language %r (%s)", language, exc)
            return []
        if not novel or not vocabulary:
            return novel
        matrix = self._vocabulary_matrix(vocabulary)
        vectors = self._embed(novel)
        similarity = (vectors @ matrix.T).max(axis=1).tolist()
        close = sorted(w for w in near or () if not w.isdigit())
        nearby = ((vectors @ self._embed(close).T).max(axis=1).tolist() if close
                  else [0.0 if near is not None else 1.0] * len(novel))
        # A name is what it is: "Notion" or "Norway" resembling a word of the knowledge base
        # ("note", "island") does not make it a thing the knowledge base speaks of.
        return [w for w, sim, near_sim in zip(novel, similarity, nearby, strict=True)
                if w in named or sim < self.related_above or near_sim < self.near_above]

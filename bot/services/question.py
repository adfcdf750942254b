"""What a question is about: the thing it asks after, which its evidence has to name.

"How many windows does the Heron room have?" retrieves the Heron room's sentences, and one of
them holds a count ("It seats 8 people"): the right kind of fact about the wrong thing. The
asked-after thing is read off the question's form ("how many X", "which X does", "is there a
X", "the name of the X", "who is the X", "who runs the X", "which Y is the X", "where is
the X", "Y's X"); a sentence is evidence
only if it names that thing, in the same word or a close one ("bicycles" and "bikes"), and for
"how many X" only if a number counts it ("24 bicycles", "bicycles…, with room for 10").
Questions of other forms pass unchanged. Plain
strings in: how close two words are is the caller's (the embedding model's) judgement.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.services.grounding import NUMBER_WORDS, names
from knowledge.evidence import STOPWORDS, content_words, root, stem

Relatedness = Callable[[str, Sequence[str]], float]  # highest similarity of a word to others

# Words that say what kind of answer is wanted, not what it is about: "which year", "what time".
_KIND_WORDS = frozenset("""
year month day date time price cost fee number name address e-mail email mail amount way kind
sort type thing percentage money
""".split())
_STOP = STOPWORDS | frozenset("""
does do is are can could should may might will would did have has for there of in on at to
with per each every a an the if that who which
today now currently nowadays still usually normally actually exactly
""".split())
# Verbs that end a question's phrase ("does a tea or coffee cost"): not the thing itself.
_VERBS_AFTER = frozenset("cost costs charge take takes last lasts open opens close closes start "
                         "starts end ends leave leaves arrive arrives mean means work works".split())
_PARTICIPLES = frozenset("held found kept run made built done given open closed shown sold".split())
_THING = r"(?P<t>[\w'’ -]+)"
# "Which bank does it use?", "Which formats can I export to?": the kind of thing that answers.
# "Which company cleans the building?", "Which architect designed it?": a verb of its own; not
# those a ship's or a bus's name answers ("Which ship sails to…"), which names often start,
# nor "operates", which sentences say otherwise ("Which company operates the café?" → "The
# café is run by a local bakery called Saltcrust": "operates" and "run" are 0.38 apart).
_KIND_VERBS = ("makes|made|cleans|cleaned|designed|designs|built|builds|insures|insured|owns|"
               "owned|runs|ran|supplies|supplied|delivers|delivered|provides|provided|organises|"
               "organised|organizes|organized|manages|managed|repairs|repaired|hosts|hosted|"
               "publishes|published|sponsors|sponsored|founded|created")
_WHICH_KIND = re.compile(r"^\s*(?:which|what)\s+(?!(?:does|do|is|are|did|can|will|was|were)\b)"
                         r"(?P<t>[\w'’ -]+?)\s+(?:does|do|is|are|can|should|did|will|was|were|"
                         r"goes|go|" + _KIND_VERBS + r")\b", re.I)
_FORMS = [
    re.compile(r"\bhow many\s+" + _THING, re.I),
    # "the name of the cat", "the phone number of the harbour master": the cat, the master.
    re.compile(r"\b(?:name|phone number|telephone number|number|e-?mail(?: address)?|address|"
               r"website|price|cost) of (?:the |a |an )?" + _THING, re.I),
    re.compile(r"^\s*who(?:'s|’s| is| are| was)\s+(?:the |a |an )" + _THING, re.I),
    # "Who designed the logo?", "Who runs the café?": whoever it is, the evidence names the logo.
    re.compile(r"^\s*who\s+(?!(?:is|are|was|were|can|could|may|might|will|would|should|"
               r"must|do|does|did|has|have|had)\b)[a-z]+\s+(?:the |a |an )" + _THING, re.I),
    # "Which ship is the water taxi?": the evidence names the water taxi, not "ship".
    re.compile(r"^\s*(?:which|what)\s+[\w'’-]+\s+(?:is|are|was|were)\s+(?:the |a |an )"
               + _THING + r"\?*\s*$", re.I),
    re.compile(r"^\s*where(?:'s|’s| is| are)\s+(?:the |a |an )" + _THING + r"\?*\s*$", re.I),
    re.compile(r"\b(?:is|are) there (?:a |an |any |some )?" + _THING, re.I),
    _WHICH_KIND,
    re.compile(r"\b(?:does|do)\s+[\w'’ -]+?\s+(?:have|offer|use|sell|rent) (?:a |an |any |some )?"
               + _THING, re.I),
    re.compile(r"\bhow much (?:is|are|does|do) (?:a |an |the |one )" + _THING, re.I),
    # "How much storage comes with…", "How much does parking cost?": storage, parking.
    re.compile(r"\bhow much (?!(?:is|are|does|do|did|will|can|of|it|more|less)\b)"
               r"(?P<t>[a-z-]+(?<!er))\s+(?:does|do|did|is|are|comes?|will|can)\b", re.I),
    re.compile(r"\bhow much (?:does|do|did|will) (?!(?:it|i|you|we|they)\b)" + _THING
               + r"\bcost\b", re.I),
    re.compile(r"\bwhat (?:does|do|would|will) (?:a |an |the |one )" + _THING + r"\bcost", re.I),
]
# The people a place holds: "how many guests does the hall hold" is answered by "60 people",
# and those a member brings: "how many friends can I bring" by "2 guests".
_PEOPLE = frozenset({"people", "persons", "person", "guests", "visitors", "attendees",
                     "participants", "seats", "friends", "colleagues"})
# Groups named by what they do: "the support team" is "support" ("The head of support is…").
_GROUP = frozenset({"team", "teams", "staff", "department", "departments", "crew", "crews",
                    "desk"})
_CAPACITY = re.compile(r"\b(hold|holds|seat|seats|fit|fits|sit|accommodate|capacity|room for|"
                       r"bring)\b", re.I)
_ROOM_FOR = re.compile(r"^(?:(?!\band\b)[\w-]+ ){0,7}?(?:room|space|places?|seats?) for (?:up to )?\d")
_NUMBER = re.compile(r"\d|(" + "|".join(NUMBER_WORDS) + r"|dozen|hundred)$", re.I)
_WORD = re.compile(r"[\w-]+")
# A discount is stated, seldom named: "70 percent off every ticket", "pay half the fare".
_DISCOUNTS = frozenset({"discount", "reduction", "rebate", "concession"})
_DISCOUNTED = re.compile(r"\b\d+\s?(?:%|percent|per cent)\s+off\b|\bhalf[ -](?:the\s+)?(?:price|"
                         r"fare|adult fare)\b|\bat half price\b|\breduced\b", re.I)
_AFTER_ARTICLE = re.compile(r"\b(?:the|a|an)\s+([\w-]+)", re.I)


@dataclass(frozen=True)
class Thing:
    """What a question asks after: `words` of its phrase (the last is its head noun), the
    owner in "the building manager's dog" (`owner`), and whether it is counted."""

    words: tuple[str, ...]
    owner: str = ""
    counted: bool = False
    capacity: bool = False
    # "Which city…", "which formats…": the kind of thing that answers, which a sentence may
    # name by an instance ("in Frankfurt", "as PDF or as HTML") instead of the word itself.
    kind: bool = False
    alternative: str = ""  # "a cappuccino or other espresso drink": the drink


_EST_NOUNS = frozenset("guest interest contest request forest harvest protest conquest inquest "
                       "manifest".split())


def _not_a_thing(word: str) -> bool:
    """A participle or a superlative ending a question's phrase: "held", "located", "biggest"."""
    return word in _PARTICIPLES \
        or (len(word) >= 6 and word.endswith("est") and word not in _EST_NOUNS) \
        or (len(word) > 4 and word.endswith("ed") and not word.endswith("eed")
            and word != "hundred")


def asked_thing(question: str) -> Thing | None:
    """The thing `question` asks after, or None when its form does not say."""
    text = question.replace("’", "'")
    for form in _FORMS:
        m = form.search(text)
        if not m:
            continue
        phrase, owner = m.group("t").lower(), ""
        if "'s " in phrase:  # "the café's head chef": the chef, of the café
            before, phrase = phrase.split("'s ", 1)
            owner = next((w for w in reversed(_WORD.findall(before)) if w not in _STOP), "")
        if re.match(r"\s*to\b", phrase):  # "do I have to pay": no thing
            continue
        words: list[str] = []
        tokens = _WORD.findall(phrase)
        end = len(tokens)
        for i, word in enumerate(tokens):
            if word in _STOP:
                if words:
                    end = i
                    break
                continue
            words.append(word)
        # "a cappuccino or other espresso drink": either may be what a sentence speaks of
        rest, alternative = tokens[end:], ""
        if rest[:1] == ["or"]:
            after = itertools.dropwhile(lambda w: w in _STOP or w == "other", rest[1:])
            named = [w for w in itertools.takewhile(lambda w: w not in _STOP, after)
                     if w not in _VERBS_AFTER]
            alternative = named[-1] if named else ""
        words = [w for w in words if w not in _KIND_WORDS and not w.isdigit() and len(w) > 1]
        # "What day is the market held?", "Where is the printer located?": the market, the
        # printer; "Which room is the biggest?" names no thing.
        while words and _not_a_thing(words[-1]):
            words.pop()
        if words:
            return Thing(tuple(words), owner, counted=form is _FORMS[0],
                         capacity=bool(_CAPACITY.search(text)), kind=form is _WHICH_KIND,
                         alternative=alternative)
    return None


# How close (cosine) the kind of thing asked for ("operating systems") and a name in the
# sentence ("Windows") must be for the name to be one of that kind.
_KIND_OF_NAMES = 0.5


def names_thing(thing: Thing, sentence: str, related: Relatedness,
                close: float = 0.7, question: str = "") -> bool:
    """Whether `sentence` speaks of `thing`: its head noun (and owner) in the same or a close
    word, and for a counted thing a number right before it ("140 desks", "3 free hours"); for
    the kind of thing that answers ("which city"), a name that `question` does not hold may
    stand for it ("in Frankfurt")."""
    tokens = [w.lower() for w in _WORD.findall(sentence)]
    content = [w for w in tokens if w not in STOPWORDS]

    def is_word(word: str, candidates: Sequence[str]) -> bool:
        if word in candidates or stem(word) in {stem(c) for c in candidates}:
            return True
        if thing.capacity and word in _PEOPLE and any(c in _PEOPLE for c in candidates):
            return True
        return bool(candidates) and related(word, candidates) >= close

    if thing.owner and not is_word(thing.owner, content):
        return False
    if not thing.counted:
        if is_word(thing.words[-1], content) or (
                thing.alternative and is_word(thing.alternative, content)):
            return True
        if stem(thing.words[-1]) in _DISCOUNTS and _DISCOUNTED.search(sentence):
            return True
        # "the support team" is spoken of as "support": a group is named by what it does
        if thing.words[-1] in _GROUP and len(thing.words) > 1 and all(
                is_word(w, content) for w in thing.words[:-1]):
            return True
        if not thing.kind or not question:
            return False
        # ... about what the question asks: another of its words is there ("exported" for
        # "export"); else the building's address, naming a street, would say which bank. Or
        # the names are of the kind asked for: "Windows, macOS, Linux" for "which operating
        # systems" (0.67; "bank" and "Tannery Row" 0.30).
        # A word the question puts after "the" is what it asks about, not what it asks: "Which
        # radio channel does the harbour use?" is not answered by "The harbour master of Port
        # Aldery is Jonas Brekke"; and "the MV Tern" names no shipyard for "Which shipyard
        # built the Tern?".
        asked = {w.lower() for w in _WORD.findall(question)}
        about = {root(m.lower()) for m in _AFTER_ARTICLE.findall(question)}
        rest = {root(w) for w in content_words(question)} - about - {
            root(w) for w in (*thing.words, *(w.lower() for n in names(question) for w in n))}
        unasked = [" ".join(n).lower() for n in names(sentence, mid_sentence=True)
                   if not {w.lower() for w in n} & asked]
        return bool(unasked) and (bool(rest & {root(w) for w in content_words(sentence)})
                                  or related(" ".join(thing.words), unasked) >= _KIND_OF_NAMES)
    # "140 desks", "3 free hours", or room for a number after it ("bicycles…, with room for 10")
    counted = [w for i, w in enumerate(tokens) if w not in STOPWORDS
               and (any(_NUMBER.match(t) for t in tokens[max(0, i - 3):i])
                    or _ROOM_FOR.search(" ".join(tokens[i + 1:i + 10])))]
    return any(is_word(w, counted) for w in (*thing.words, thing.alternative) if w)


def names_another(question: str, sentence: str, framed: str = "",
                  asks_name: bool = False) -> bool:
    """Whether `sentence` speaks of another named thing than `question` does: the question
    names something the sentence (`framed` by its title and section, if given) does not ("How
    many cars fit on the Puffin?"), and the sentence itself names something the question does
    not ("The MV Tern takes 40 cars"; a section called "Departures" names nothing). A sentence
    that names nothing may still answer ("It employs 62 people" for "…work at Saltmarsh
    Ferries?"). When the question `asks_name` ("Who manages the community at Brightwater?"),
    one name the question lacks is the answer ("The community manager is Tomasz Okafor"); a
    second is another thing ("The captain of the MV Tern is Jo Hale" for the Puffin's)."""
    def words(text: str) -> set[str]:
        return {stem(w) for w in _WORD.findall(text.lower())}

    said, asked = words(framed or sentence), words(question)
    if all(words(" ".join(n)) <= said for n in names(question)):
        return False
    unasked = [n for n in names(sentence) if not words(" ".join(n)) <= asked]
    return len(unasked) > (1 if asks_name else 0)

"""Is an answer supported by its evidence? And if not, what do we say instead?

A small model reads excerpts well enough to pick the right sentence, and badly enough to
misspell a network name, turn euros into cents or invent a fax number. Every fact-like token of
an answer (a number, price, time, e-mail, code, quoted term or proper name) must therefore
occur in the evidence it was given; an answer that fails is replaced by the evidence itself,
quoted with its source. Plain strings in, plain strings out: no model, no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from knowledge.evidence import CALENDAR, MONTHS, WEEKDAYS

# A claim: something a reader would take as a fact that must have come from somewhere.
_CLAIM = re.compile(
    r"[\w.+-]+@[\w.@-]*\w"                                  # e-mail (or a mangled one)
    r"|[€$£]?\s?\+?(?<![^\W\d_])\d(?:[\d ]*\d)?(?:[.,:/]\d+)*\s?[€$£%]?"  # numbers, prices…
    r"(?:\s?(?:euros?|eur|dollars?|percent|per ?cent|days?|weeks?|months?|years?|hours?|"
    r"minutes?|people|persons?|pages?|metres?|meters?|m²|km|kwh|mbit/s|mbit|am|pm)\b)?"
    r"|\"[^\"\n]{2,40}\"|“[^”\n]{2,40}”|«[^»\n]{2,40}»"      # quoted terms
    r"|\b\w*[A-Za-z]\w*(?:-\w+)+\b"                         # hyphenated codes (BW-Guest)
    r"|\b[A-Z]\w*[A-Z]\w*\b"                                # inner capitals (DeskLoop)
    r"|\b[A-Z][a-z]{2,}\b",                                 # capitalised words (names)
)
NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
                 "eleven": "11", "twelve": "12", "twenty": "20", "thirty": "30", "forty": "40",
                 "fifty": "50", "sixty": "60", "hundred": "100", "first": "1st",
                 "second": "2nd", "third": "3rd", "half": "50%"}
# Words a sentence may start with, or that any answer may use, without claiming anything.
_PLAIN = frozenset("""
a an the i you yes no it its this that these those there they we he she please sorry sure
according however also and but or so if when what where which who how why in on at for from
to of by with about as is are was were be can could will would should may might do does did
not none only each every all both some any our your their my his her hello hi thanks thank
ok okay note here today tomorrow source sources answer question excerpt excerpts
""".split())
_DONT_KNOW = re.compile(
    r"\b(i (do not|don't|dont) know|not sure|no information|(can ?not|can't|couldn't|could "
    r"not) (find|answer|tell)|does not (say|mention)|doesn't (say|mention)|is not mentioned|"
    r"isn't mentioned|not (in|covered by) the (excerpts|knowledge base))\b", re.I)
# Where a small model runs on after its answer: a new "Question:", a role tag, an excerpt.
_RUN_ON = re.compile(r"\n\s*(question|q|user|assistant|answer|excerpt|source|sources|note)"
                     r"\s*\d*\s*[:：]|\n\s*<|\bquestion\s*\d+\s*:|</?excerpt", re.I)


_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b")


def _as_digits(text: str) -> str:
    """Lower-case number words as digits: "three" → "3", "first" → "1st"."""
    return _NUMBER_WORD.sub(lambda m: NUMBER_WORDS[m.group(1)], text)


def normalise(text: str) -> str:
    """Lower case, unified quotes and dashes, no spaces or thousands separators, number words
    as digits: so '€ 1,200', '1200 €' and 'three' compare with '€1200' and '3'."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("’", "'").replace("‘", "'").replace("–", "-").replace("—", "-")
    text = _as_digits(text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"(\d+(?:[.,]\d+)?)\s?(?:euros?|eur)\b", r"€\1", text)  # "12 euros" is "€12"
    text = re.sub(r"\beur\s?(?=\d)", "€", text)
    text = re.sub(r"(?<=\d)\s?(?:percent|per cent)\b", "%", text)
    text = re.sub(r"(?<=\d)\.00\b", "", text)  # "€18.00" says what "€18" says
    text = re.sub(r"(?<=\d)\s?(day|week|month|year|hour|minute|page|person|metre|meter)s\b",
                  r" \1", text)  # "30 days" and "30 day"
    text = re.sub(r"\b0(?=\d:\d\d)", "", text)  # "07:30" and "7:30"
    return re.sub(r"[\s\"“”«»'`*_]+", "", text)


def claims(text: str) -> list[str]:
    """The fact-like tokens of `text`, in order, without duplicates."""
    found: dict[str, None] = {}
    for m in _CLAIM.finditer(text):
        token = m.group(0).strip(" \"“”«»")
        if not token or token.lower() in _PLAIN:
            continue
        if token[0].isupper() and token[1:].islower() and _starts_sentence(text, m.start()):
            continue  # "Members pay…": a capital only because the sentence starts there
        found[token] = None
    return list(found)


def _starts_sentence(text: str, at: int) -> bool:
    before = text[:at].rstrip(" \"“'(")
    return not before or before[-1] in ".!?:\n•-*"


def occurs(claim: str, source: str) -> bool:
    """`claim` in normalised `source`, numbers whole: "3" is not found in "30", "€0.35" or
    "€3"."""
    token = normalise(claim)
    if not token:
        return True
    # A bare number is not a price: "4 devices" is not found in "€4 per month".
    pattern = ("(?<![\\d.,€$£])" if token[0].isdigit() else "") + re.escape(token) + \
        (r"(?![\d]|[.,]\d)" if token[-1].isdigit() else "")
    return re.search(pattern, source) is not None


def unsupported_claims(answer: str, evidence: Iterable[str]) -> list[str]:
    """Claims of `answer` that occur in none of the evidence texts (normalised)."""
    source = normalise("\n".join(evidence))
    return [c for c in claims(answer) if not occurs(c, source)]


def says_dont_know(text: str) -> bool:
    return _DONT_KNOW.search(text) is not None


def trim_run_on(text: str) -> str:
    """The answer without what a small model adds after it: 'Question 2: …', role tags,
    a repeated excerpt, or a last sentence cut off by the token limit."""
    m = _RUN_ON.search(text)
    if m:
        text = text[: m.start()]
    text = text.strip()
    if text and text[-1] not in ".!?)\"”»" and re.search(r"[.!?]\s", text):
        text = text[: max(text.rfind(". "), text.rfind("! "), text.rfind("? ")) + 1]
    return text.strip()


# What a question asks for, when its form says so; the evidence must hold that kind of thing.
_ASKS_NUMBER = re.compile(
    r"\b(how (much|many|long|late|early|big|large|fast|often|soon)|what (time|year|day|date)|"
    r"which (year|day|date)|when|price|cost|costs|fee|fees|rate|number|phone|how old)\b", re.I)
# "How many" wants a count; "when" may be answered by a weekday or a month as well.
_ASKS_COUNT = re.compile(r"\bhow (many|much|long|big|large|fast|old)\b|\bnumber\b", re.I)
# A count: a number that is not a price ("€18" says nothing about how many people fit).
_COUNT = re.compile(r"(?<![€$£\w.,-])\d(?![\d.,]*\s?(?:€|euros?|eur\b))|\b("
                    + "|".join(NUMBER_WORDS) + r"|free|a few|several|dozen)\b", re.I)
_ASKS_NAME = re.compile(r"^\s*(who|whom|whose)\b|\bname of\b", re.I)
# A deposit is an amount of money: "How big is the deposit?" is not answered by "14 days".
# Paying "in cash" or "by card" is a way to pay, not a price: "On board only cards are accepted".
# "Can I pay cash on board?" asks how, not how much.
_ASKS_PRICE = re.compile(r"\b(cost|costs|price|prices|fee|fees|charge|how much (is|are|does|do|"
                         r"for)|how expensive|pay(?!\s+(?:in|by|with|using|via|cash|cards?|"
                         r"credit|contactless|online)\b)|deposit|deposits)\b", re.I)
_PRICE = re.compile(r"[€$£]|\d\s?(euros?|eur|dollars?|%|percent)|\b(free|half|discount)\b", re.I)
# "When" as the question's own word ("When does…", "…, and when…", "tell me when…"), not a
# clause of it: "How much deposit do I pay when I join?" asks for a price.
_WHEN = r"(?:^\W*|[,;:]\s*|\b(?:and|but|so|then|until|till|since|from|by|me|know|say|wonder|" \
    r"wondering|asking)\s+)when"
_ASKS_TIME = re.compile(_WHEN + r"\b|\b(what time|which day|what day|how long|how many|"
                        r"how much time|how often|how soon)\b", re.I)
# A clock time, not a day: "What time does it open on Mondays?" is not answered by "It opens
# on Mondays"; "closed" is an answer.
_ASKS_CLOCK = re.compile(r"\b(what|which|at what) time\b(?! of (the )?(year|day|month))|"
                         r"\bhow (late|early)\b", re.I)
_CLOCK_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b", re.I)
_CLOCK = re.compile(r"\d|\b(noon|midday|midnight|morning|afternoon|evening|night|closed|"
                    r"around the clock)\b", re.I)
# "How long" wants a duration (or a length): a number with its unit, or a span of clock times;
# "at 18:00" or "every month" is no answer to "How long does each member get?".
_ASKS_DURATION = re.compile(r"\bhow long\b", re.I)
_UNITS = (r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|fortnights?|"
          r"months?|years?|metres?|meters?|km|kilometres?|kilometers?|miles?|feet|foot)")
_DURATION = re.compile(
    r"(?:\d+(?:[.,]\d+)?|\b(?:" + "|".join(NUMBER_WORDS) + r"|a|an|a few|several|half an?|"
    r"half a)\b)[\s-]*" + _UNITS + r"\b"
    r"|\d{1,2}[:.]\d{2}\s*(?:-|–|to|until|till)\s*\d{1,2}[:.]\d{2}"
    r"|\b(?:until|till|overnight|all day|around the clock)\b|24/7", re.I)
# "How old" wants an age or the year something began: "140 desks" is no answer to "How old is
# the cat?", "founded in 2017" or "three years old" is.
_ASKS_AGE = re.compile(r"\bhow old\b", re.I)
_YEAR = re.compile(r"\b(1[5-9]|20)\d\d\b")
_AGE = re.compile(_YEAR.pattern + r"|\bsince\b|(?:\d+|\b(?:" + "|".join(NUMBER_WORDS)
                  + r"|a|an|a few|several)\b)[\s-]*(?:years?|months?|weeks?|days?)\b", re.I)
# "What is the top speed of the ship?" wants a speed, "the maximum height" a length: a sentence
# about the ship without one ("it takes 320 passengers") does not answer.
_ASKS_SPEED = re.compile(r"\b(speed|speeds)\b", re.I)
# "How fast does support reply?" wants a speed or a time: "within one working day".
_ASKS_HOW_FAST = re.compile(r"\bhow (fast|quickly|soon)\b", re.I)
_SPEED = re.compile(r"\d\s*(?:knots?|km/h|kph|mph|kilomet(?:re|er)s? (?:an|per) hour|"
                    r"miles? (?:an|per) hour|[kmg]bits?|[kmg]bps|[kmg]b/s)", re.I)
_ASKS_SIZE = re.compile(r"\b(height|width|length|depth|weight|how (tall|wide|heavy|deep|high))\b",
                        re.I)
_SIZE = re.compile(r"\d\s*(?:m|cm|mm|km|metres?|meters?|centimet(?:re|er)s?|feet|foot|ft|"
                   r"inch(?:es)?|kg|kilos?|kilograms?|tonnes?|tons?|lbs?|pounds?|square)\b", re.I)
# "How large can an attachment be?", "the maximum upload size": an amount of data, which a
# sentence about the plan's price and number of seats ("€7 per person, at least 3 people")
# does not give.
_DATA_THING = r"\b(attachments?|files?|uploads?|storage|disk|quota|mailbox)\b"
_DATA_SIZE = r"\b(how (big|large)|size|biggest|largest|max|maximum|limit)\b"
_ASKS_DATA = re.compile(rf"{_DATA_SIZE}(?=.*{_DATA_THING})|{_DATA_THING}(?=.*{_DATA_SIZE})|"
                        r"\bhow much (storage|disk|space|data)\b", re.I)
_ASKS_COUNT_OF = re.compile(r"\bhow many\b", re.I)
_DATA = re.compile(r"\d\s*(?:[kmgt]i?b|bytes?|kilobytes?|megabytes?|gigabytes?|terabytes?)\b",
                   re.I)
# "What is the street address?", "Which street and number…?": a street address, which "The
# coworking space has 140 desks" is not; an e-mail or web address is another kind.
_ASKS_ADDRESS = re.compile(r"\b(?<!e-mail )(?<!email )(?<!web )(?<!ip )(address|street|"
                           r"postcode|post code|zip code)\b", re.I)
_STREET = (r"(?i:street|st|road|rd|row|lane|ln|avenue|ave|square|sq|place|pl|way|quay|drive|"
           r"dr|court|ct|terrace|hill|gardens?|walk|close|crescent|boulevard|blvd|parade|"
           r"wharf|embankment|strasse|straße|gasse|weg|platz|straat|gracht|plein|rue)")
_ADDRESS = re.compile(rf"\b\d+[a-z]?,?\s+(?:[A-Z][\w'-]*\s+){{0,3}}{_STREET}\b|"
                      rf"\b(?:[A-Z][\w'-]*\s+){{0,3}}[A-Z]?[\w'-]*{_STREET}\s+\d+[a-z]?\b")
_ASKS_YEAR = re.compile(r"\b(which|what) year\b|\bsince when\b", re.I)
_ASKS_MONTH = re.compile(r"\b(which|what) month\b", re.I)
# A month's name, "May" only with its capital: "Members may bring guests" names no month.
_MONTH_WORD = "(?i:" + MONTHS.replace("may|", "") + ")|May"
_MONTH = re.compile(rf"\b({_MONTH_WORD})\b")
# "When in the year…?", "At what time of year…?": a month or a season; a sentence about
# "3 free hours per month" is no answer to when the annual meeting is.
_ASKS_SEASON = re.compile(r"\bwhen in the year\b|\btime of (the )?year\b|\b(which|what) "
                          r"season\b", re.I)
_SEASON = re.compile(rf"\b({_MONTH_WORD}|(?i:spring|summer|autumn|fall|winter|christmas|"
                     r"easter|new year))\b")
# Asking for an e-mail address, not about e-mail ("How fast is an e-mail answered?").
_ASKS_EMAIL = re.compile(r"\b(?:which|what)\b[^?.]*\be-?mail\b|\be-?mail (?:address|of)\b|"
                         r"\bto e-?mail\b", re.I)
# "Do I need a school e-mail address for the discount?" asks yes or no, not which address.
_ASKS_IF_NEEDED = re.compile(r"^\s*(?:do|does|did|will|would|must|should|is|are)\b[^?]*"
                             r"\b(?:need|needs|require|requires|required)\b", re.I)
_NAME = re.compile(r"\b[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)*")
_QUANTITY = re.compile(r"\d|\b(" + "|".join(NUMBER_WORDS) + r"|free|closed|daily|weekly|"
                       + "|".join(WEEKDAYS) + r"|weekdays?|weekends?|noon|midnight|morning|"
                       r"evening|night|" + MONTHS + r")\b", re.I)


def is_name(words: str, starts_sentence: bool) -> bool:
    """Whether capitalised `words` name someone or something: not a weekday or month, and
    not an everyday word capitalised only because a sentence starts with it ("Outside")."""
    if CALENDAR.match(words):
        return False
    if starts_sentence and " " not in words:
        from wordfreq import zipf_frequency

        return words.lower() not in _PLAIN and zipf_frequency(words.lower(), "en") < 4.0
    return True


def names(text: str, mid_sentence: bool = False) -> list[tuple[str, ...]]:
    """The names `text` mentions, each as its words: runs of capitalised words that are not a
    weekday or month, less an everyday word that starts a sentence ("The MV Tern": MV Tern;
    a title or heading before " — " or ":" ends where a sentence starts); `mid_sentence`:
    only those inside a sentence, none that starts one."""
    found = []
    for m in _NAME.finditer(text):
        words = m.group(0).split()
        before = text[:m.start()].rstrip(" \"“'(")
        starts = not before or before[-1] in ".!?:\n•-*—–"
        if starts and mid_sentence:
            continue
        if starts and not is_name(words[0], True):
            words = words[1:]
        words = [w for w in words if not CALENDAR.match(w)]
        if words:
            found.append(tuple(words))
    return found


# The kinds of fact a question may ask for, most specific first: the first it asks for is the
# one its evidence must hold ("how much time" asks for a time, not a price).
_KINDS: list[tuple[Callable[[str], object], re.Pattern[str]]] = [
    (_ASKS_ADDRESS.search, _ADDRESS),
    (_ASKS_SPEED.search, _SPEED),
    (_ASKS_HOW_FAST.search, re.compile(f"{_SPEED.pattern}|{_DURATION.pattern}|\\bwithin\\b",
                                       re.I)),
    (lambda q: _ASKS_DATA.search(q) and not _ASKS_PRICE.search(q)
     and not _ASKS_COUNT_OF.search(q), _DATA),
    (_ASKS_SIZE.search, _SIZE),
    (_ASKS_CLOCK.search, _CLOCK),
    (_ASKS_DURATION.search, _DURATION),
    (_ASKS_AGE.search, _AGE),
    (_ASKS_YEAR.search, _YEAR),
    (_ASKS_MONTH.search, _MONTH),
    (_ASKS_SEASON.search, _SEASON),
    (lambda q: _ASKS_PRICE.search(q) and not _ASKS_TIME.search(q), _PRICE),
    (_ASKS_COUNT.search, _COUNT),
    (_ASKS_NUMBER.search, _QUANTITY),
]


# "Who decides…?", "Who can vote…?", "Who starts the dishwashers?": whoever does it, a person
# or a role ("The captain decides on the day", "started by the last member to leave").
_ASKS_WHO_DOES = re.compile(r"^\s*who\s+(?:(?:can|may|must|will|should|does|do|did)\s+)?"
                            r"(?!(?:is|are|was|were|has|have|had|be)\b)([a-z]{3,})\b", re.I)
_AUXILIARY = frozenset("can may must will should would could shall also only always usually "
                       "often then still".split())
_NOT_A_DOER = frozenset("it they this that which who to we you i he she there".split())


def _verb_root(word: str) -> str:
    """`_root` less a final e: "decides", "decide", "decided" → "decid"."""
    root = _root(word.lower())
    return root[:-1] if root.endswith("e") else root


def does_it(question: str, sentence: str) -> bool:
    """For "who does X?": whether `sentence` says who does it by role, its verb with a doer
    before it ("The captain decides", "every member may vote") or "by" someone after it."""
    m = _ASKS_WHO_DOES.search(question)
    if not m:
        return False
    verb = _verb_root(m.group(1))
    tokens = [w.lower() for w in re.findall(r"[\w'-]+", sentence)]
    # The doer is not what the question names: "the dishwashers start at 20:00" says no one.
    not_doers = _NOT_A_DOER | _PLAIN | {"is", "are"} | {
        w.lower() for w in re.findall(r"[\w'-]+", question)}
    for i, token in enumerate(tokens):
        if _verb_root(token) != verb:
            continue
        before = [w for w in tokens[:i] if w not in _AUXILIARY][-1:]
        if before and before[0] not in not_doers:
            return True
        if "by" in tokens[i + 1:i + 6]:
            return True
    return False


def asks_name(question: str) -> bool:
    """Whether the question asks who, or for the name of something."""
    return bool(_ASKS_NAME.search(question))


def gives_address(question: str, sentence: str) -> bool:
    """Whether the question asks for a street address and `sentence` gives one: "The building
    is at 14 Tannery Row" answers "What is the street address of the coworking space?",
    though it does not say "coworking space"."""
    return bool(_ASKS_ADDRESS.search(question) and _ADDRESS.search(sentence))


def answers_kind(question: str, sentence: str) -> bool:
    """False when the question asks for a number, a person or an e-mail the sentence lacks."""
    if _ASKS_EMAIL.search(question) and not _ASKS_IF_NEEDED.search(question) \
            and "@" not in sentence:
        return False
    if _ASKS_NAME.search(question):
        asked = normalise(question)
        named = [n for i, n in ((m.start(), m.group(0)) for m in _NAME.finditer(sentence))
                 if is_name(n, _starts_sentence(sentence, i))]
        return any(normalise(n) not in asked for n in named) or does_it(question, sentence)
    wanted = next((kind for asks, kind in _KINDS if asks(question)), None)
    return wanted is None or wanted.search(sentence) is not None


_DAY_WORD = "(" + "|".join(WEEKDAYS) + ")s?"
_DAY_RANGE = re.compile(rf"\b{_DAY_WORD}\s*(?:to|until|till|through|-|–)\s*{_DAY_WORD}\b", re.I)
_DAY = re.compile(rf"\b{_DAY_WORD}\b|\b(weekdays?|weekends?|daily|every day|(?:7|seven) days "
                  r"a week)\b", re.I)


def days(text: str) -> frozenset[int]:
    """The days of the week `text` speaks of (0 = Monday): named ones, "Monday to Friday",
    "weekdays", "weekends", "daily"."""
    found: set[int] = set()
    for m in _DAY_RANGE.finditer(text):
        first, last = WEEKDAYS.index(m.group(1).lower()), WEEKDAYS.index(m.group(2).lower())
        found |= {d % 7 for d in range(first, last + 1 if last >= first else last + 8)}
    for m in _DAY.finditer(text):
        word = m.group(0).lower()
        if m.group(1):
            found.add(WEEKDAYS.index(m.group(1).lower()))
        elif word.startswith("weekday"):
            found |= {0, 1, 2, 3, 4}
        elif word.startswith("weekend"):
            found |= {5, 6}
        else:
            found |= set(range(7))
    return frozenset(found)


def same_days(question: str, sentence: str) -> bool:
    """False when the question asks about a day the sentence's days leave out: "the first
    ferry on weekdays" does not answer "on a Saturday"; a sentence naming no day may."""
    asked = days(question)
    said = days(sentence) if asked else frozenset()
    return not asked or not said or bool(asked & said)


# "Do dogs have to be on a lead?", "Must I book?": a yes-or-no question about a rule, which a
# sentence stating an obligation answers ("They must be kept on a leash").
_ASKS_OBLIGATION = re.compile(r"^\s*(?:do|does|did|must|should|is|are|will|would|can|could)\b"
                              r".*\b(?:have to|has to|must|need to|needs to|required|obliged|"
                              r"mandatory|compulsory)\b", re.I)
_OBLIGATION = re.compile(r"\b(?:must|have to|has to|need to|needs to|required|obliged|mandatory|"
                         r"compulsory|should)\b", re.I)


def about_obligation(question: str, sentence: str) -> bool:
    """Whether `question` asks yes or no about a rule and `sentence` states one."""
    return bool(_ASKS_OBLIGATION.search(question) and _OBLIGATION.search(sentence))


def asks_kind(question: str) -> bool:
    """Whether the question asks for a fact of a kind: a number, price, date, name, e-mail."""
    return any(p.search(question) for p in (_ASKS_EMAIL, _ASKS_NAME, _ASKS_YEAR, _ASKS_MONTH,
                                             _ASKS_PRICE, _ASKS_NUMBER))


_NEGATION = re.compile(r"\b(not|no|never|closed|cannot|can't|isn't|aren't|don't|doesn't|"
                       r"won't|nobody|none|nothing|neither|nor)\b|n't\b", re.I)


def same_polarity(answer: str, sentence: str) -> bool:
    """A yes/no answer must not flip its evidence: 'closed on Sundays' is no 'open'."""
    return bool(_NEGATION.search(answer)) == bool(_NEGATION.search(sentence))


@dataclass(frozen=True)
class Check:
    """The verdict on one generated answer."""

    supported: bool
    unsupported: list[str]
    reason: str  # ok | empty | dont_know | asks_back | unsupported | off_topic | contradicts
    #              | new_words | says_nothing


# A price with the period it is paid for: "€7 per person per month", "40 euros a year".
_PRICE_PER = re.compile(r"([€$£]\s?\d[\d.,]*|\d[\d.,]*\s?(?:euros?|eur|dollars?))"
                        r"[^.;\n]{0,25}?\b(?:per|a|an|each|every)\s+(hour|day|night|week|month|"
                        r"year)\b", re.I)


def _price_periods(text: str) -> set[tuple[str, str]]:
    return {(normalise(m.group(1)).rstrip(".,"), m.group(2).lower())
            for m in _PRICE_PER.finditer(text)}


# Words between a number and what it counts: "3 free hours", "up to 4 extra people".
_COUNT_MODIFIERS = frozenset("""
free extra more additional other new small large big full whole single only about up to at
least most a an the of per each every
""".split())
_COUNT_TOKEN = re.compile(r"[€$£]?\d+(?:[.,:]\d+)*|[a-zà-öø-ÿ][\w'-]*")


def _counted(text: str) -> dict[str, set[str]]:
    """Each bare number of `text` (not a price or a time), with the words it counts: the
    first word after it that is not a modifier ("3 free hours": hours)."""
    tokens = _COUNT_TOKEN.findall(_as_digits(normalise_words(text)))
    found: dict[str, set[str]] = {}
    for i, token in enumerate(tokens):
        if not token[0].isdigit() or ":" in token:
            continue
        word = next((w for w in tokens[i + 1:i + 4]
                     if not w[0].isdigit() and w not in _COUNT_MODIFIERS), None)
        if word is not None:
            found.setdefault(token, set()).add(_root(word))
    return found


def miscounted(answer: str, evidence: str) -> list[str]:
    """Numbers of `answer` that count something else than the same number in `evidence`:
    "3 free meeting rooms" where it says "3 free hours of meeting room time"."""
    said = _counted(evidence)
    return [f"{number} {word}" for number, words in _counted(answer).items()
            if number in said for word in sorted(words) if word not in said[number]]


def check_answer(answer: str, question: str, evidence: list[str]) -> Check:
    """Is `answer` a usable reply to `question` given `evidence` (best sentence first)?

    The answer's facts must all come from the first, best sentence: a small model that
    borrows a number from a neighbouring sentence is usually answering another question.
    So must its words: one taken from the question instead pins the sentence's fact on what
    was asked ("The backup data centre is in Frankfurt." from "…stored in a data centre in
    Frankfurt" for "In which city is the backup data centre?").
    """
    if not answer.strip():
        return Check(False, [], "empty")
    if says_dont_know(answer):
        return Check(False, [], "dont_know")
    if _only_questions(answer):  # "What is a parking and transport?" for "…nearest tram stop?"
        return Check(False, [], "asks_back")
    missing = unsupported_claims(answer, evidence[:1])
    # The price is there, but paid for another period: "€7 per year" where it says per month.
    missing += [f"{price} per {period}" for price, period in
                sorted(_price_periods(answer) - _price_periods(evidence[0]))]
    # The number is there, but counting another thing: "3 free meeting rooms" for 3 hours.
    missing += miscounted(answer, evidence[0])
    if missing:
        return Check(False, missing, "unsupported")
    facts = claims(answer)
    if not answers_kind(question, answer) or (asks_kind(question) and not facts):
        return Check(False, [], "off_topic")
    if _ASKS_TIME.search(question) and _CLOCK_TIME.search(evidence[0]) \
            and not re.search(r"\d", answer):  # "It opens on weekdays." for "When ... open?"
        return Check(False, [], "off_topic")
    if not same_polarity(answer, evidence[0]):
        return Check(False, [], "contradicts")
    novel = new_words(answer, evidence[0])
    if novel:
        return Check(False, novel, "new_words")
    if not facts and not new_words(answer, question):  # "The meeting room app."
        return Check(False, [], "says_nothing")
    return Check(True, [], "ok")


def _only_questions(answer: str) -> bool:
    """Every sentence of `answer` is a question: it asks instead of answering."""
    sentences = [x for x in re.split(r"(?<=[.!?])\s+", answer.strip()) if x]
    return all(x.endswith("?") for x in sentences)


# Latin-script words only: the crude stemming below means nothing for Korean or Japanese.
_WORDS = re.compile(r"[a-zà-öø-ÿ]+")
# Words any answer may use to phrase what its evidence says.
_PHRASING = _PLAIN | frozenset("""
am been being has have had get gets got can't cannot don't doesn't isn't aren't won't there's
it's that's also just up down out up per each every any more most less least than then very
too much many one ones there here yes no not now time times way use used using need needs
euro euros eur percent cent cents
""".split())


def _root(word: str) -> str:
    """A crude stem, enough to tell 'booked' and 'books' from 'book', not 'week' from 'month'."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def new_words(answer: str, source: str) -> list[str]:
    """Words of `answer` found neither in `source` (its evidence, say) nor among the words any
    answer uses: 'every week' where the evidence says 'every month'."""
    known = {_root(w) for w in _WORDS.findall(normalise_words(source))}
    return [w for w in dict.fromkeys(_WORDS.findall(normalise_words(answer)))
            if w not in _PHRASING and _root(w) not in known]


def normalise_words(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().replace("’", "'")


def supported(text: str, evidence: Iterable[str], given: str = "",
              min_share: float = 0.6) -> bool:
    """True if `evidence` backs `text` (a user's correction, say): each of its claims occurs in
    it, and at least `min_share` of its other words do (crudely stemmed). What `text` repeats
    from `given` (the question it answers) counts neither way."""
    joined, asked = "\n".join(evidence), normalise(given)
    known = {_root(w) for w in _WORDS.findall(normalise_words(given))}
    source = normalise(joined)
    if any(not occurs(c, source) for c in claims(text) if not (given and occurs(c, asked))):
        return False
    words = [w for w in dict.fromkeys(_WORDS.findall(normalise_words(text)))
             if w not in _PHRASING and _root(w) not in known]
    if not words:
        return True
    missing = set(new_words(text, joined))
    return 1 - sum(w in missing for w in words) / len(words) >= min_share

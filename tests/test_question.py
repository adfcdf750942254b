"""What a question asks after, and whether a sentence speaks of it (plain strings, no model)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bot.services.grounding import answers_kind, is_name, names
from bot.services.question import Thing, asked_thing, names_another, names_thing

# Word closeness as an embedding model would judge it, for the pairs these tests use.
CLOSE = {("bicycles", "bikes"), ("print", "printing")}


def related(word: str, words: Sequence[str]) -> float:
    return max((0.9 if (word, w) in CLOSE else 0.1 for w in words), default=0.0)


@pytest.mark.parametrize(("question", "thing"), [
    ("How many windows does the Heron room have?", Thing(("windows",), counted=True)),
    ("How many free meeting room hours do members get?",
     Thing(("free", "meeting", "room", "hours"), counted=True)),
    ("What is the name of the café's head chef?", Thing(("head", "chef"), owner="café")),
    ("Who is the chief financial officer of Brightwater?",
     Thing(("chief", "financial", "officer"))),
    ("Is there a sauna in the building?", Thing(("sauna",))),
    ("Which bank does Brightwater use for direct debits?", Thing(("bank",), kind=True)),
    ("Does the Kestrel room have a screen?", Thing(("screen",))),
    ("How much is a colour print?", Thing(("colour", "print"))),
    ("Who designed the Brightwater logo?", Thing(("brightwater", "logo"))),
    ("Who runs the café?", Thing(("café",))),
    ("What does a Demo Night ticket cost for non-members?", Thing(("demo", "night", "ticket"))),
    ("Who owns the company today?", Thing(("company",))),  # "today" is when, not what
    ("Which ship is the water taxi?", Thing(("water", "taxi"))),  # the taxi, not "ship"
    ("Where is the head office?", Thing(("head", "office"))),
    ("Where is the printer located?", Thing(("printer",))),
    ("What day is the market held?", Thing(("market",))),
    ("What is the phone number of the harbour master?", Thing(("harbour", "master"))),
    ("How much storage does a Team account get?", Thing(("storage",))),
    ("How much does parking at the terminal cost?", Thing(("parking",))),
])
def test_the_thing_asked_after_is_read_off_the_question(question: str, thing: Thing) -> None:
    assert asked_thing(question) == thing


@pytest.mark.parametrize("question", [
    "When does the building open?",          # no form that names a thing
    "What time does Demo Night start?",      # "time" says what kind of answer, not about what
    "What did the founder do before?",       # "what did X do" is not "what X did"
    "Do I have to pay for filter coffee?",
    "What does one cost per month?",
    "Who can vote at the yearly meeting?",   # a modal, not a verb done to the meeting
    "Who founded Brightwater?",              # no article: a name, not a thing
    "How much cheaper is it for islanders?",  # a comparison, not a thing
    "How much do children pay?",             # who pays, not what is paid for
    "How much is it to take a bike on the ferry?",
    "How much money do I get back?",         # money is the kind of answer
])
def test_questions_of_other_forms_name_no_thing(question: str) -> None:
    assert asked_thing(question) is None


def test_a_count_must_count_the_thing_asked_after() -> None:
    windows = asked_thing("How many windows does the Heron room have?")
    assert windows is not None
    assert not names_thing(windows, "The Heron room seats 8 people and measures 22 square "
                                    "metres.", related)
    assert names_thing(windows, "The Heron room has 4 tall windows.", related)
    members = asked_thing("How many members does the cooperative have?")
    assert members is not None  # a member is named, but six counts months
    assert not names_thing(members, "Every member older than six months may vote.", related)
    bikes = asked_thing("How many bicycles fit in the bike room?")
    assert bikes is not None and names_thing(bikes, "It has space for 30 bikes.", related)


def test_either_thing_of_an_or_may_be_spoken_of() -> None:
    drink = asked_thing("How much is a cappuccino or other espresso drink?")
    assert drink is not None and drink.alternative == "drink"
    assert names_thing(drink, "Espresso drinks from the café cost €2.50 each.", related)
    assert not names_thing(drink, "A day pass costs €14.", related)
    cappuccino = asked_thing("How much is a cappuccino?")
    assert cappuccino is not None and not names_thing(
        cappuccino, "Espresso drinks from the café cost €2.50 each.", related)
    # the verb after the phrase is not the other thing
    tea = asked_thing("How much does a tea or coffee cost?")
    assert tea is not None and tea.alternative == "coffee"
    desks = asked_thing("How many desks or offices are there?")
    assert desks is not None and names_thing(desks, "There are 20 offices.", related)


def test_a_team_is_named_by_what_it_does() -> None:
    team = asked_thing("Who leads the support team?")
    assert team is not None and team.words == ("support", "team")
    assert names_thing(team, "The head of support is Dario Venn.", related)
    assert not names_thing(team, "The head of sales is Ida Holm.", related)
    room = asked_thing("Who cleans the meeting room?")  # a room is no group: its name is not
    assert room is not None and not names_thing(room, "Meeting notes are kept by Ida.", related)


def test_a_place_that_holds_guests_is_answered_by_the_people_it_holds() -> None:
    guests = asked_thing("How many guests does the Atrium hold?")
    assert guests is not None and guests.capacity
    assert names_thing(guests, "The Atrium holds up to 60 people.", related)
    assert not names_thing(guests, "The Atrium costs 240 euros for 4 hours.", related)
    # the friends a member may bring are the guests the rules count
    friends = asked_thing("How many friends can I bring along?")
    assert friends is not None and friends.capacity
    assert names_thing(friends, "Members may bring up to 2 guests per day.", related)
    assert not names_thing(friends, "Members may bring up to 2 bicycles per day.", related)


def test_the_head_noun_and_its_owner_must_both_be_named() -> None:
    dog = asked_thing("What is the name of the building manager's dog?")
    assert dog is not None and dog.owner == "manager"
    assert not names_thing(dog, "The building manager is Rhea Lindqvist.", related)
    assert not names_thing(dog, "Dogs are welcome on the ground floor.", related)
    assert names_thing(dog, "The building manager's dog is called Rhea.", related)
    officer = asked_thing("Who is the chief financial officer?")
    assert officer is not None
    assert not names_thing(officer, "The building is at 14 Tannery Row, Veldmoor.", related)
    assert names_thing(asked_thing("How much is a colour print?") or officer,
                       "Printing: a colour page costs €0.25.", related)  # by closeness


def test_weekdays_and_sentence_initial_words_are_not_names() -> None:
    assert not is_name("Friday", starts_sentence=False)
    assert not is_name("Outside", starts_sentence=True)
    assert is_name("Saltcrust", starts_sentence=True)
    assert is_name("Rhea Lindqvist", starts_sentence=True)
    who = "Who starts the dishwashers?"
    assert not answers_kind(who, "The fridge is emptied every Friday at 16:00.")
    assert answers_kind(who, "The dishwashers are started by Tomasz Okafor.")


def test_a_code_is_not_a_count() -> None:
    assert not answers_kind("How fast is the members' Wi-Fi?",
                            "The Wi-Fi network for members is called BW-Members-5G.")
    assert answers_kind("How fast is the guest Wi-Fi?", "It is limited to 10 Mbit/s.")


def test_which_one_is_the_thing_is_answered_by_the_sentence_naming_the_thing() -> None:
    taxi = asked_thing("Which ship is the water taxi?")
    assert taxi is not None
    assert names_thing(taxi, "The MV Skua is a small water taxi for 12 passengers.", related)
    assert not names_thing(taxi, "The MV Puffin is the spare ship.", related)
    office = asked_thing("Where is the head office?")
    assert office is not None
    assert not names_thing(office, "Amira Castell is the head of customer service.", related)
    assert names_thing(office, "The head office is at 3 Quay Street.", related)
    master = asked_thing("What is the phone number of the Skerryvale harbour master?")
    assert master is not None
    assert not names_thing(master, "Customer service answers the phone on +31 55 501 4200.",
                           related)


def test_names_are_capitalised_runs_less_a_sentences_first_everyday_word() -> None:
    framed = ("About Saltmarsh Ferries — The fleet: The MV Tern is the largest: it takes 320 "
              "passengers and 40 cars on Saturdays.")
    assert names(framed) == [("Saltmarsh", "Ferries"), ("MV", "Tern")]
    assert names("How many cars fit on the Puffin?") == [("Puffin",)]
    assert names("Quillnote runs on Windows and Linux.") == [("Quillnote",), ("Windows",),
                                                             ("Linux",)]


@pytest.mark.parametrize(("question", "sentence", "another"), [
    # The question names one ship, the sentence another: about something else.
    ("How many cars fit on the Puffin?",
     "About Saltmarsh Ferries — The fleet: The MV Tern takes 320 passengers and 40 cars.", True),
    ("What does a dog ticket cost on the Skua?",
     "Tickets and fares — Foot passengers: A single ticket to Skerryvale costs €12.", True),
    ("How much storage does a Team account get?",
     "Plans and prices — Plus plan: Each Plus account gets 50 GB of storage.", True),
    # The named thing is there, in the sentence or its title.
    ("How many passengers fit on the Tern?",
     "About Saltmarsh Ferries — The fleet: The MV Tern takes 320 passengers and 40 cars.", False),
    ("How many people work for Saltmarsh Ferries?",
     "About Saltmarsh Ferries: It employs 62 people, most of them on the ships.", False),
    # A sentence that names nothing may answer about the named thing.
    ("How many desks does Brightwater have?", "About: The space has 140 desks in total.", False),
    # Only names count: a question naming nothing is not this rule's business.
    ("How many cars fit on the biggest ship?", "The MV Tern takes 40 cars.", False),
])
def test_a_sentence_naming_another_thing_than_the_question_is_about_something_else(
        question: str, sentence: str, another: bool) -> None:
    assert names_another(question, sentence) is another


def test_the_one_name_a_who_question_lacks_is_its_answer() -> None:
    who = "Who manages the community at Brightwater?"
    sentence = "The community manager is Tomasz Okafor."
    assert names_another(who, sentence)  # as any question would see it
    assert not names_another(who, sentence, asks_name=True)
    # a second name the question lacks is another thing: the captain of another ship
    assert names_another("Who is the captain of the Puffin?",
                         "The captain of the MV Tern is Jo Hale.", asks_name=True)


def test_a_sentences_title_and_section_may_name_the_thing_but_name_nothing_else() -> None:
    saturday = "When does the first boat leave Port Aldery on a Saturday?"
    text = "On Saturdays and Sundays the first ferry leaves at 08:00."
    # "Departures" starts the framed sentence and reads as a name; it is the section's name
    assert names_another(saturday, f"Departures: {text}")
    assert not names_another(saturday, text, framed=f"Routes and timetable — Departures: {text}")
    # the title names the asked thing: the sentence is about it
    assert not names_another("How many ships does Saltmarsh Ferries have?",
                             "The fleet has four ships.",
                             framed="About Saltmarsh Ferries — The fleet: The fleet has four "
                                    "ships. The MV Tern is the largest.")
    assert names_another("How many cars fit on the Puffin?", "The MV Tern takes 40 cars.",
                         framed="About Saltmarsh Ferries — The fleet: The MV Tern takes 40 "
                                "cars.")


def test_a_count_may_follow_its_thing_as_room_for_a_number() -> None:
    bikes = asked_thing("How many bicycles fit on the Gannet?")
    assert bikes is not None
    assert names_thing(bikes, "On the MV Gannet bicycles are stored at the bow, with room for "
                              "10.", related)
    assert not names_thing(bikes, "On the MV Gannet bicycles are stored at the bow.", related)
    assert not names_thing(bikes, "Bicycles are free, and cars cost 38 euros.", related)


@pytest.mark.parametrize(("question", "sentence", "answers"), [
    ("Who decides whether a sailing is cancelled?", "The captain decides on the day.", True),
    ("Who starts the dishwashers?",
     "Dishwashers are started every evening by the last member to leave the kitchen.", True),
    ("Who can vote at the yearly meeting?",
     "Every member with a plan older than six months may vote at the annual meeting.", True),
    # the verb without anyone doing it, or a question that asks who someone is
    ("Who decides whether a sailing is cancelled?", "It decides nothing on the day.", False),
    ("Who starts the dishwashers?", "The dishwashers start at 20:00.", False),
    ("Who is the captain of the Gannet?", "The captain decides on the day.", False),
])
def test_who_does_something_is_answered_by_a_role_doing_it(question: str, sentence: str,
                                                           answers: bool) -> None:
    assert answers_kind(question, sentence) is answers


def test_the_kind_of_thing_asked_for_may_be_named_by_an_instance_of_it() -> None:
    formats = "Which formats can I export a notebook to?"
    thing = asked_thing(formats)
    assert thing is not None and thing.kind
    assert names_thing(thing, "Export: Any notebook can be exported as Markdown, as PDF or as "
                              "HTML.", related, question=formats)
    # a name the question itself holds is no instance of what it asks for
    bank = "Which bank does Brightwater use for direct debits?"
    thing = asked_thing(bank)
    assert thing is not None and thing.kind
    assert not names_thing(thing, "Brightwater charges fees on the 1st day of every month by "
                                  "direct debit.", related, question=bank)
    # a name in a sentence about something else is no instance of a bank
    assert not names_thing(thing, "The building is at 14 Tannery Row, Veldmoor.", related,
                           question=bank)
    assert names_thing(thing, "Direct debits are collected by Harbour Savings.", related,
                       question=bank)
    # a capitalised word that starts a sentence names nothing
    assert not names_thing(thing, "Billing: Fees are charged by direct debit.", related,
                           question=bank)
    # other forms never stand in by a name
    room = asked_thing("Does the Kestrel room have a screen?")
    assert room is not None and not room.kind
    assert not names_thing(room, "The Kestrel room has a DeskLoop whiteboard.", related,
                           question="Does the Kestrel room have a screen?")


def test_names_of_the_kind_asked_for_answer_a_which_question() -> None:
    systems = "Which operating systems does Quillnote support?"
    thing = asked_thing(systems)
    assert thing is not None and thing.kind

    def kinds(word: str, words: Sequence[str]) -> float:  # as the embedding model judges
        return 0.67 if word == "operating systems" and "windows" in words else 0.2

    runs = "Quillnote runs on Windows, macOS and Linux."
    assert names_thing(thing, runs, kinds, question=systems)
    assert not names_thing(thing, runs, related, question=systems)  # not of that kind
    # no name the question lacks, no instance of the kind
    assert not names_thing(thing, "Quillnote runs on any windows computer.", kinds,
                           question=systems)


def test_what_a_which_question_asks_about_is_no_answer_to_it() -> None:
    radio = "Which radio channel does the harbour use?"
    thing = asked_thing(radio)
    assert thing is not None and thing.kind
    # the harbour is what the question is about: a sentence naming its master does not say
    # which channel, though it shares "harbour" and names someone
    assert not names_thing(thing, "The harbour master of Port Aldery is Jonas Brekke.",
                           related, question=radio)
    # what the question asks (its verb) with a name the question lacks may
    assert names_thing(thing, "Pilots use Kestrel Sound to call the harbour.", related,
                       question=radio)
    # a name sharing a word with the question is the thing asked about, not an instance
    city = "Which city does the Tern sail from?"
    thing = asked_thing(city)
    assert thing is not None and thing.kind
    assert not names_thing(thing, "The MV Tern sails every hour.", related, question=city)
    assert names_thing(thing, "The MV Tern sails from Port Aldery.", related, question=city)


def test_a_discount_is_named_by_what_it_takes_off() -> None:
    thing = asked_thing("Is there a discount for islanders?")
    assert thing is not None
    islanders = ("People who live on Inch Holm get 70 percent off every ticket with an "
                 "islander card.")
    assert names_thing(thing, islanders, related)
    assert names_thing(thing, "Children pay half the adult fare.", related)
    assert not names_thing(thing, "Islanders get their card at the terminal office.", related)


def test_which_x_does_something_asks_for_an_x() -> None:
    cleans = "Which company cleans the building?"
    thing = asked_thing(cleans)
    assert thing is not None and thing.kind and thing.words == ("company",)
    # the building manager's name is no cleaning company
    assert not names_thing(thing, "The building manager is Rhea Lindqvist.", related,
                           question=cleans)
    assert names_thing(thing, "The building is cleaned by Sparkle Services every night.",
                       related, question=cleans)
    # a ship's name, which often starts its sentence, answers "which ship sails…": not read so
    assert asked_thing("Which ship sails to Skerryvale?") is None
    # nor "operates", which the knowledge base says with other words ("run by a bakery")
    assert asked_thing("Which company operates the café?") is None

"""A second knowledge base for the answer benchmark, never used to develop the answer path:
a fictional ferry company (`kb/`), written in session 24 with its questions below, before
the product was first run on it. `python bench/answers/run.py --set ferries`.

Same conventions as `bench/answers/questions.py`: a fact is a string, or a list of strings any
one of which counts; questions are phrased differently from the documents.
"""

NAME = "Saltmarsh"  # the company's name: a capitalised word that is no claim of its own
WARMUP = "Hello, what can you tell me about Saltmarsh Ferries?"

ANSWERABLE: list[tuple[str, list[str | list[str]]]] = [
    ("Who set up Saltmarsh Ferries?", ["Tomas Ekdahl"]),
    ("In what year was the ferry company started?", ["1998"]),
    ("Who owns the company today?", ["municipality"]),
    ("How many people work for Saltmarsh Ferries?", ["62"]),
    ("How many passengers fit on the Tern?", ["320"]),
    ("How many cars can the biggest ship carry?", ["40"]),
    ("Which ship is the water taxi?", ["Skua"]),
    ("Where is the head office?", ["3 Quay Street"]),
    ("How long is the trip to Inch Holm?", [["35 minutes", "35 min"]]),
    ("How long does it take to get from Port Aldery to Skerryvale?",
     [["1 hour and 20 minutes", "1 hour 20", "80 minutes", "1h20"]]),
    ("When does the first boat leave Port Aldery on a Saturday?", [["08:00", "8:00", "8 am"]]),
    ("What time does the earliest ferry go on a Wednesday?", [["06:15", "6:15"]]),
    ("When is the last departure from Port Aldery?", [["22:40", "10:40"]]),
    ("What does a one-way adult ticket to Inch Holm cost?", [["€6.50", "6.50", "6.5"]]),
    ("How much is a return to Inch Holm?", [["€11", "11"]]),
    ("Do toddlers need a ticket?", [["free", "under 4"]]),
    ("How much do children pay?", ["half"]),
    ("How much cheaper is it for people who live on the islands?",
     [["70 percent", "70%", "70 %"]]),
    ("What does it cost to bring my car over?", [["€38", "38"]]),
    ("How much is it to take a bike on the ferry?", [["€2", "2"]]),
    ("How long can I use a ten-trip card?", [["6 months", "six months"]]),
    ("Can I pay in cash on board?", [["card", "not", "no cash"]]),
    ("How many suitcases can I bring without paying extra?", [["two", "2"]]),
    ("What is the extra charge for a kayak?", [["€4", "4"]]),
    ("Do dogs have to be on a lead?", ["leash"]),
    ("How many bicycles can the Tern take?", ["24"]),
    ("Can a wheelchair user get on the Skua?", [["no lift", "not", "too steep"]]),
    ("How far ahead do I have to ask for boarding help?", [["24 hours", "24 hour"]]),
    ("How windy does it have to be before sailings are called off?", [["50 knots", "50"]]),
    ("What is the text alert service called?", ["FerryAlert"]),
    ("How much of my fare do I get back if I cancel two days before?",
     [["80 percent", "80%", "80 %"]]),
    ("How long is a voucher valid?", [["12 months", "twelve months", "a year"]]),
    ("What does a coffee on board cost?", [["€2.80", "2.80", "2.8"]]),
    ("What is the name of the Wi-Fi network?", ["Saltmarsh-Free"]),
    ("How long do you keep things people leave on board?", [["90 days", "ninety days"]]),
    ("Which e-mail address can I write to?", ["help@saltmarsh-ferries.example"]),
    ("Who is the head of customer service?", ["Amira Castell"]),
    ("How long before departure must cars check in?", [["20 minutes", "twenty minutes"]]),
    ("What is the maximum height of a vehicle?", [["4.2 metres", "4.2 m", "4.2"]]),
    ("When does the terminal office open?", [["05:45", "5:45"]]),
]

# On topic, but the knowledge base does not hold the answer: the right reply says so.
UNANSWERABLE: list[str] = [
    "Does Saltmarsh Ferries sail to Norway?",
    "How much is an overnight cabin?",
    "Who is the captain of the Gannet?",
    "Can I bring a horse on the ferry?",
    "What is the top speed of the Tern?",
    "How much does parking at the terminal cost?",
    "Is there a discount for students?",
    "In which year was the Tern built?",
    "What is the phone number of the Skerryvale harbour master?",
    "Is there a duty-free shop on board?",
    "How many crew members work on the Skua?",
    "Is breakfast included in the ticket price?",
]

# (first question, follow-up that needs it, facts of the follow-up's answer)
FOLLOW_UPS: list[tuple[str, str, list[str | list[str]]]] = [
    ("How much does it cost to take a car across?", "And a campervan?", [["€54", "54"]]),
    ("Is there Wi-Fi on the Tern?", "What is the network called?", ["Saltmarsh-Free"]),
    ("How many passengers does the Gannet take?", "And the Puffin?", ["95"]),
    ("When does the first ferry leave on weekdays?", "And the last one from Inch Holm?",
     [["23:20", "11:20"]]),
]

# Held out: written after the first run on this knowledge base, before any change made from
# what it showed, and never used to tune the answer path.
HELD_OUT_ANSWERABLE: list[tuple[str, list[str | list[str]]]] = [
    ("What did the founder do for a living?", ["fisherman"]),
    ("How many ships does the company have?", [["four", "4"]]),
    ("Which ship is used when another one is being repaired?", ["Puffin"]),
    ("How many passengers can the Gannet carry?", ["180"]),
    ("Which ship sails to Skerryvale?", ["Tern"]),
    ("How long is the crossing between the two islands?", [["50 minutes", "50 min"]]),
    ("What does a single to Skerryvale cost?", [["€12", "12"]]),
    ("Who gives out islander cards?", ["terminal office"]),
    ("What is the fare for a campervan?", [["€54", "54"]]),
    ("How much does the ten-trip card cost?", [["€52", "52"]]),
    ("Where do e-scooters have to stay?", ["car deck"]),
    ("How do cats have to travel?", ["carrier"]),
    ("How many bikes fit on the Gannet?", ["10"]),
    ("Can guide dogs go into the café?", [["everywhere", "café"]]),
    ("Who decides whether a sailing is cancelled?", ["captain"]),
    ("What happens to lost items after 90 days?", ["charity"]),
    ("How quickly are complaints answered?", [["10 working days", "ten working days"]]),
    ("Who is the harbour master in Port Aldery?", ["Jonas Brekke"]),
    ("What is the longest vehicle allowed?", [["12 metres", "12 m"]]),
    ("How far ahead can I reserve a car space?", [["60 days", "sixty days"]]),
]
HELD_OUT_UNANSWERABLE: list[str] = [
    "How many cars fit on the Puffin?",
    "What does a dog ticket cost on the Skua?",
    "Who is the chief executive of Saltmarsh Ferries?",
    "Is there a playground on board for children?",
    "How much does a locker at the terminal cost?",
    "What is the name of the café's cook?",
    "Does the Gannet have a sun deck with deckchairs?",
    "How many tonnes can the freight line carry?",
]

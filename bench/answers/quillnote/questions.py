"""A third knowledge base for the answer benchmark: a fictional note-taking app's help centre
(`kb/`), written in session 25 with every question below, the held-out ones included, before
the product was first run on it. `python bench/answers/run.py --set quillnote`.

Same conventions as `bench/answers/questions.py`: a fact is a string, or a list of strings any
one of which counts; questions are phrased differently from the documents. The held-out
questions are never read to change the answer path.
"""

NAME = "Quillnote"  # the product's name: a capitalised word that is no claim of its own
WARMUP = "Hi, what is Quillnote?"

ANSWERABLE: list[tuple[str, list[str | list[str]]]] = [
    ("Which company makes Quillnote?", ["Lantern Works"]),
    ("How many people work at Lantern Works?", ["18"]),
    ("When was Quillnote first released?", ["2019"]),
    ("Who started Lantern Works?", ["Maren Osei"]),
    ("Does Quillnote work on Linux?", [["Linux", "yes"]]),
    ("How many devices can I sync on the free plan?", [["2", "two"]]),
    ("How large can an attachment be on the Free plan?", [["5 MB", "5MB"]]),
    ("What does Plus cost per month?", [["€4", "4"]]),
    ("How much is Plus if I pay for a year?", [["€40", "40"]]),
    ("How much storage comes with a Plus account?", [["50 GB", "50GB"]]),
    ("What is the price of the Team plan?", [["€7", "7"]]),
    ("What is the smallest team that can sign up for the Team plan?", [["3", "three"]]),
    ("Do students get a discount?", ["half"]),
    ("Can a charity use the Team plan for free?", [["free", "10 people"]]),
    ("How quickly does a change reach the cloud?", [["10 seconds", "ten seconds"]]),
    ("What happens when I edit the same note on two devices at once?",
     [["both versions", "conflict"]]),
    ("In which city are the servers?", ["Frankfurt"]),
    ("What encryption protects my stored notes?", [["AES-256", "AES"]]),
    ("Can you recover my Vault if I forget the passphrase?", [["cannot", "not"]]),
    ("How far back does the version history go for free users?", [["7 days", "seven days"]]),
    ("How long do deleted notes stay in the trash?", [["30 days", "thirty days"]]),
    ("Where do I find older versions of a note?", ["History"]),
    ("Can I bring my notes over from Evernote?", [["Evernote", "ENEX"]]),
    ("How many notes can one import contain?", [["10,000", "10000", "10 000"]]),
    ("Which formats can I export a notebook to?", ["Markdown", "PDF", "HTML"]),
    ("How long does it take before my account export is ready?",
     [["one hour", "1 hour", "an hour"]]),
    ("What is the shortcut for a new note on Windows?", ["Ctrl+N"]),
    ("Which keys open quick capture?", ["Ctrl+Alt+Q"]),
    ("How do I paste without formatting?", ["Ctrl+Shift+V"]),
    ("What e-mail address does support use?", ["help@quillnote.example"]),
    ("How fast does support reply to an e-mail?", [["one working day", "1 working day"]]),
    ("When is the live chat open?", [["08:00", "8:00"], ["18:00", "6 pm"]]),
    ("Who leads the support team?", ["Dario Venn"]),
    ("When does planned maintenance happen?", ["Sunday"]),
    ("Which payment methods are accepted?", [["credit card", "PayPal"]]),
    ("Can I get my money back for a yearly plan?", [["14 days", "refund"]]),
    ("What happens to my notes when my paid plan ends?", [["never deleted", "read-only",
                                                           "Free plan"]]),
    ("How many people can edit one note together on the Team plan?", ["25"]),
    ("Can people with a shared link change my note?", [["only if", "editing", "read"]]),
    ("How do I notify someone in a comment?", ["@"]),
]

# On topic, but the knowledge base does not hold the answer: the right reply says so.
UNANSWERABLE: list[str] = [
    "Is there a Quillnote app for smartwatches?",
    "How much storage does a Team account get?",
    "How large can an attachment be on the Team plan?",
    "What does the Enterprise plan cost?",
    "Who is the chief technology officer of Lantern Works?",
    "Can I import notes from Notion?",
    "Is there a phone number for support?",
    "Does Quillnote have a dark mode?",
    "In which city is the backup data centre?",
    "Can I pay with bank transfer?",
    "How long does the version history go back for deleted notebooks?",
    "What is the shortcut for bold text?",
]

# (first question, follow-up that needs it, facts of the follow-up's answer)
FOLLOW_UPS: list[tuple[str, str, list[str | list[str]]]] = [
    ("How much does the Plus plan cost a month?", "And the Team plan?", [["€7", "7"]]),
    ("How long is the version history on the Free plan?", "And on Plus?",
     [["1 year", "one year", "a year"]]),
    ("What is the largest attachment on the Free plan?", "And on Plus?",
     [["200 MB", "200MB"]]),
    ("When does the live chat open?", "Who can use it?", [["Plus", "Team"]]),
]

# Held out: written with the rest before the first run, and never used to tune the answer path.
HELD_OUT_ANSWERABLE: list[tuple[str, list[str | list[str]]]] = [
    ("What did the founder do before she learned to code?", ["court reporter"]),
    ("Where is Lantern Works based?", ["Tallberg"]),
    ("How many notebooks does the Free plan sync?", [["2", "two"]]),
    ("How many devices can a Plus account use?", [["5", "five"]]),
    ("What is the biggest attachment Plus allows?", [["200 MB", "200MB"]]),
    ("For how long can a Team admin see who changed what?", [["365 days", "a year"]]),
    ("How many people does the free charity offer cover?", [["10", "ten"]]),
    ("What colour is the conflict flag?", ["yellow"]),
    ("What is a Vault encrypted with?", ["passphrase"]),
    ("How long is version history kept on the Team plan?", [["1 year", "one year", "a year"]]),
    ("Can I import from OneNote?", [["OneNote", "yes"]]),
    ("How are tags kept in exported Markdown?", [["line at the top", "top of each file"]]),
    ("Where do I export my whole account?", [["Settings", "Export everything"]]),
    ("What does Ctrl+K do?", ["link"]),
    ("Which shortcut searches every notebook?", ["Ctrl+Shift+F"]),
    ("Where can I see if Quillnote is down?", ["status.quillnote.example"]),
    ("Can I cancel a monthly plan whenever I want?", [["any time", "anytime", "cancelled"]]),
    ("When are invoices sent?", [["first day", "billing period"]]),
    ("Who can read a note shared by link?", [["anyone", "whoever"]]),
    ("At what time of day is maintenance planned?", [["04:00", "4:00"]]),
]
HELD_OUT_UNANSWERABLE: list[str] = [
    "How much storage comes with the Free plan?",
    "What does the Team plan cost per year?",
    "Which city is Dario Venn based in?",
    "Can more than 25 people comment on a note at once?",
    "How many notes can a Team notebook hold?",
    "Is the live chat open on Saturdays?",
    "What is the shortcut to close a note?",
    "Does Lantern Works have an office in London?",
]

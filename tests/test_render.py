from bot.render import split_message


def test_short_text_is_one_part() -> None:
    assert split_message("Hello.") == ["Hello."]


def test_long_text_splits_on_paragraphs_within_the_limit() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(12)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = split_message(text)
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    assert all(p.startswith("Paragraph") for p in parts)  # every part begins a paragraph
    assert "\n\n".join(parts) == text


def test_no_word_is_ever_cut() -> None:
    text = " ".join(f"token{i}" for i in range(3000))  # one huge paragraph, no sentences
    parts = split_message(text, limit=500)
    assert all(len(p) <= 500 for p in parts)
    assert " ".join(parts).split() == text.split()


def test_sentences_are_preferred_over_spaces() -> None:
    text = " ".join(f"This is sentence number {i}." for i in range(400))
    parts = split_message(text, limit=1000)
    assert all(p.endswith(".") for p in parts)


def test_unbroken_runs_are_cut_hard_but_lose_nothing() -> None:
    text = "가" * 9000
    parts = split_message(text)
    assert [len(p) for p in parts] == [4096, 4096, 808]
    assert "".join(parts) == text

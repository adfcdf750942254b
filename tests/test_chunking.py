from knowledge.chunking import chunk_text
from tests.fakes import FakeEmbedder

count = FakeEmbedder().count_tokens


def test_headings_start_new_chunks_and_are_carried() -> None:
    text = "# Install\n\nRun make run.\n\n# Rate\n\nPress a button."
    chunks = chunk_text(text, count, max_tokens=50)
    assert chunks == ["Install\nRun make run.", "Rate\nPress a button."]


def test_chunks_fit_the_token_budget_and_cover_all_words() -> None:
    para = " ".join(f"Sentence {i} talks about topic {i}." for i in range(200))
    chunks = chunk_text(para, count, max_tokens=60, overlap_tokens=10)
    assert len(chunks) > 5
    assert all(count(c) <= 60 for c in chunks)
    words = set(para.split())
    assert words <= set(" ".join(chunks).split())


def test_neighbouring_chunks_overlap() -> None:
    para = " ".join(f"Fact number {i} is here." for i in range(60))
    chunks = chunk_text(para, count, max_tokens=40, overlap_tokens=10)
    first_tail = chunks[0].split(".")[-2].strip()
    assert first_tail and first_tail in chunks[1]


def test_korean_without_spaces_is_split_within_budget() -> None:
    korean = "안녕하세요반갑습니다" * 100  # 1,000 Hangul characters, no spaces, no punctuation
    chunks = chunk_text(korean, count, max_tokens=100)
    assert len(chunks) >= 10
    assert all(count(c) <= 100 for c in chunks)
    assert "".join(chunks) == korean

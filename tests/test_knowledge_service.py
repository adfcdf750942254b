from pathlib import Path

import pytest

from bot.services import UserError
from bot.services.knowledge import AddStatus
from bot.wiring import Services


def test_add_search_and_remove(services: Services, tmp_path: Path) -> None:
    f = tmp_path / "faq.md"
    f.write_text("# Returns\n\nYou can return any item within 30 days.\n")
    result = services.knowledge.add_file(f, actor="telegram:42", added_by=42)
    assert result.status is AddStatus.ADDED
    assert result.document.title == "Returns" and result.document.chunk_count == 1
    hits = services.knowledge.search("return an item within days")
    assert hits[0].document_id == result.document.id and hits[0].title == "Returns"
    assert services.knowledge.remove(result.document.id, actor="test")
    assert services.knowledge.search("return an item") == []
    assert services.knowledge.list_documents() == []


def test_identical_content_is_not_stored_twice(services: Services, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Same words here.")
    (tmp_path / "b.txt").write_text("Same   words here.\n")
    first = services.knowledge.add_file(tmp_path / "a.txt", actor="test")
    second = services.knowledge.add_file(tmp_path / "b.txt", actor="test")
    assert second.status is AddStatus.DUPLICATE and second.document.id == first.document.id
    assert len(services.knowledge.list_documents()) == 1


def test_same_source_replaces_and_drops_old_chunks(services: Services, tmp_path: Path) -> None:
    f = tmp_path / "policy.md"
    f.write_text("# Policy\n\nRefunds take seven days.")
    first = services.knowledge.add_file(f, actor="test")
    f.write_text("# Policy\n\nRefunds take three weeks.")
    second = services.knowledge.add_file(f, actor="test")
    assert second.status is AddStatus.REPLACED
    assert (second.document.id, second.document.version) == (first.document.id, 2)
    texts = [h.text for h in services.knowledge.search("refunds take", k=10)]
    assert texts == ["Policy\nRefunds take three weeks."]


def test_unsupported_and_empty_files_get_clear_messages(services: Services,
                                                        tmp_path: Path) -> None:
    (tmp_path / "x.exe").write_bytes(b"MZ")
    with pytest.raises(UserError, match=r"Supported: \.txt, \.md"):
        services.knowledge.add_file(tmp_path / "x.exe", actor="test")
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(UserError, match="empty"):
        services.knowledge.add_file(tmp_path / "empty.md", actor="test")


def test_reindex_rebuilds_chroma_from_sql_alone(services: Services, tmp_path: Path) -> None:
    for i in range(3):
        services.knowledge.add_text(f"Doc {i}", f"Paragraph about topic{i}.", f"t:{i}", "test")
    services.knowledge.index.clear()
    assert services.knowledge.search("topic1") == []
    assert services.knowledge.reindex() == 3
    assert services.knowledge.search("topic1")[0].title == "Doc 1"


def test_seeding_adds_the_samples_once(services: Services) -> None:
    assert services.knowledge.seed_samples() >= 3
    titles = {d.title for d in services.knowledge.list_documents()}
    assert "Bot commands" in titles
    assert services.knowledge.seed_samples() == 0


def test_a_chunk_deleted_by_another_process_mid_query_is_skipped(services: Services) -> None:
    """Another process replacing a document can delete a chunk between Chroma's vector search
    and its record lookup; Chroma then returns the id with no metadata and no text. Found by the
    soak (a question failed with TypeError); the search must return the other hits."""
    for i in range(3):
        services.knowledge.add_text(f"Doc {i}", f"Paragraph about topic{i}.", f"t:{i}", "test")
    index = services.knowledge.index
    real = index._collection  # type: ignore[attr-defined]

    class Racing:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def query(self, **kwargs):  # type: ignore[no-untyped-def]
            result = real.query(**kwargs)
            result["metadatas"][0][0] = None
            result["documents"][0][0] = None
            return result

    index.__dict__["_collection"] = Racing()
    hits = services.knowledge.search("topic1", k=3)
    assert len(hits) == 2 and all(h.text and h.title.startswith("Doc") for h in hits)

"""A process killed mid-ingest leaves a store that `kb check` flags and `kb reindex` repairs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from bot.cli import main
from tests.conftest import MODEL_CACHE

# Runs in a separate process: add a document, then replace it and die (SIGKILL) after only
# half of the new version's chunks reached Chroma.
CRASHING_INGEST = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from bot.config import Settings
    from bot.wiring import build_services
    from knowledge.index import KnowledgeIndex

    original_add = KnowledgeIndex.add

    def add_then_die(self, document_id, version, title, chunks, embeddings=None):
        if version == 2:
            half = len(chunks) // 2
            original_add(self, document_id, version, title, chunks[:half],
                         embeddings[:half] if embeddings else None)
            os.kill(os.getpid(), signal.SIGKILL)
        return original_add(self, document_id, version, title, chunks, embeddings)

    KnowledgeIndex.add = add_then_die
    doc = Path(sys.argv[1])
    services = build_services(Settings(), with_chat=False, seed=False)
    doc.write_text(sys.argv[2])
    services.knowledge.add_file(doc, actor="test")
    doc.write_text(sys.argv[3])
    services.knowledge.add_file(doc, actor="test")
""")


def manual(word: str) -> str:
    return "\n\n".join(f"# Section {i}\n\n" + f"The {word} setting number {i} controls feature "
                       f"{i} of the device. " * 12 for i in range(8))


def test_kill_mid_replace_then_reindex(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(MODEL_CACHE))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CHROMA_URL", raising=False)
    doc = tmp_path / "manual.md"
    proc = subprocess.run([sys.executable, "-c", CRASHING_INGEST, str(doc), manual("alpha"),
                           manual("omega")], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]

    # SQL already holds version 2; the index holds all of v1 and half of v2.
    assert main(["kb", "check"]) == 1
    report = capsys.readouterr().out
    assert "chunks indexed" in report and "kb reindex" in report
    # Searches never mix versions, even before the repair: no v1 ("alpha") text comes back.
    assert main(["kb", "search", "alpha setting controls feature", "-k", "10", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all("alpha" not in h["chunk"] for h in hits)

    assert main(["kb", "reindex"]) == 0
    capsys.readouterr()
    assert main(["kb", "check"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["kb", "search", "omega setting number 7", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "Section 7" in hits[0]["chunk"]

"""`assistant kb ...` and `assistant db ...` with the real embedding model and embedded Chroma."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.storage.models import Rating
from bot.terminal import TERMINAL_USER, chat_loop
from bot.wiring import Services
from tests.conftest import MODEL_CACHE, use_backend


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: dict[str, str]) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(MODEL_CACHE))  # the ONNX export is made once
    use_backend(monkeypatch, backend)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.e2e
def test_kb_add_list_search_remove_reindex(env: Path, capsys) -> None:
    (env / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days of a return.")
    (env / "shipping.txt").write_text("Shipping to Korea takes five working days.")
    code, out, _ = run(capsys, "kb", "add", "refunds.md", "shipping.txt")
    assert code == 0 and "added as #1 “Refunds”" in out and "added as #2" in out

    code, out, _ = run(capsys, "kb", "list", "--json")
    docs = json.loads(out)
    assert [d["title"] for d in docs] == ["Refunds", "shipping"]

    code, out, _ = run(capsys, "kb", "search", "how long does delivery to Korea take", "--json")
    hits = json.loads(out)
    assert hits[0]["document_id"] == 2 and hits[0]["score"] > hits[1]["score"]

    code, out, _ = run(capsys, "kb", "reindex")
    assert code == 0 and "2 chunks" in out
    code, out, _ = run(capsys, "kb", "check")
    assert code == 0 and "OK" in out

    code, out, _ = run(capsys, "kb", "remove", "2")
    assert code == 0
    code, out, _ = run(capsys, "kb", "search", "delivery to Korea", "--json")
    assert {h["document_id"] for h in json.loads(out)} == {1}


@pytest.mark.e2e
@pytest.mark.slow
def test_switching_to_the_packaged_mpnet_asks_for_a_reindex_then_finds_the_page(
        env: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from knowledge.embeddings import MPNET_PARTS

    try:
        importlib.metadata.distribution(MPNET_PARTS[0])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 is not installed (make install-mpnet; .ci/run does)")
    (env / "truncate.md").write_text("# TRUNCATE\n\nTRUNCATE quickly removes all rows from a "
                                     "set of tables, without scanning them.")
    (env / "grant.md").write_text("# GRANT\n\nGRANT gives roles privileges on database "
                                  "objects such as tables, columns and schemas.")
    assert run(capsys, "kb", "add", "truncate.md", "grant.md")[0] == 0
    monkeypatch.setenv("SEARCH_MODEL", "all-mpnet-base-v2")
    code, out, err = run(capsys, "kb", "search", "empty a big table instantly")
    assert code == 1 and "built with the embedding model all-MiniLM-L6-v2" in err \
        and "assistant kb reindex" in err and "Traceback" not in err
    assert run(capsys, "kb", "check")[0] == 1
    code, out, _ = run(capsys, "kb", "reindex")
    assert code == 0 and "2 chunks" in out
    code, out, _ = run(capsys, "kb", "search", "let another user read my table", "--json")
    assert code == 0 and json.loads(out)[0]["title"] == "GRANT"
    code, out, _ = run(capsys, "kb", "search", "empty a big table instantly", "--json")
    assert json.loads(out)[0]["title"] == "TRUNCATE"
    assert run(capsys, "kb", "check")[0] == 0


def test_kb_add_reports_bad_files_and_keeps_the_good_ones(env: Path, capsys) -> None:
    (env / "good.md").write_text("Good content.")
    (env / "tool.exe").write_bytes(b"MZ")
    (env / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    code, out, err = run(capsys, "kb", "add", "tool.exe", "broken.pdf", "missing.md", "good.md")
    assert code == 1
    assert "'tool.exe' is not a supported type. Supported: .txt, .md, .html, .htm, .pdf" in err
    assert "'broken.pdf' could not be read as a PDF" in err and "missing.md" in err
    assert "good.md: added" in out


def test_db_upgrade_and_config_errors(env: Path, capsys, monkeypatch) -> None:
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and (env / "data" / "assistant.db").exists()
    monkeypatch.setenv("ADMIN_IDS", "not-a-number")
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 2 and "Configuration error" in err


def test_run_without_token_explains_what_to_do(env: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    code, _, err = run(capsys, "run")
    assert code == 2 and "TELEGRAM_BOT_TOKEN" in err


def test_terminal_chat_answers_and_takes_ratings(services: Services, fake_model) -> None:
    services.knowledge.add_text("Notes", "What this is: a test.", "t:notes", "test")
    fake_model.queue("First answer.")
    stdin = io.StringIO("/up\nWhat is this?\n/down\n/up\n/quit\n")
    stdout = io.StringIO()
    assert chat_loop(services, stdin, stdout) == 0
    out = stdout.getvalue()
    assert "Nothing to rate yet." in out
    assert "First answer." in out and "Rating created." in out and "Rating changed." in out
    with services.db.read() as s:
        assert [(r.user_id, r.value) for r in s.scalars(select(Rating))] == [(TERMINAL_USER.id, 1)]


def _commands(parser, prefix: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    import argparse

    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_working_help(capsys) -> None:
    """argparse %-formats help text, so one stray "%" in a flag's help breaks `--help`."""
    from bot.cli import build_parser

    commands = list(_commands(build_parser()))
    assert ("tune", "nightly") in commands and ("kb", "add") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0, command
        assert "usage: assistant" in capsys.readouterr().out


def test_training_knobs_are_flags_in_three_groups(capsys) -> None:
    """`tune` commands take every knob of `TuneConfig` as a flag, by HfArgumentParser."""
    from tuning.config import DataConfig, GateConfig, TrainingConfig, TuneConfig, parse_config

    cfg = parse_config(["--learning-rate", "1e-3", "--min_rows", "5", "--golden-margin", "0.2",
                        "--method", "prompt-tuning", "--resume"], "test")
    assert (cfg.learning_rate, cfg.min_rows, cfg.golden_margin, cfg.method, cfg.resume) == \
        (1e-3, 5, 0.2, "prompt-tuning", True)
    assert cfg.batch_size == TuneConfig().batch_size  # the rest keep their defaults
    for group in (TrainingConfig, DataConfig, GateConfig):
        with pytest.raises(SystemExit):
            parse_config(["--help"], "test")
        assert f"\n{group._argument_group_name}:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        parse_config(["--method", "full-finetune"], "test")
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["tune", "list", "--learning-rate", "1"])  # only training commands take knobs
    assert exit_.value.code == 2


def test_backup_restores_into_a_fresh_data_dir_that_answers(env: Path, capsys,
                                                            monkeypatch) -> None:
    """`db backup` while the data is live, `db restore` into a new data dir: the documents,
    ratings and serving adapter come back, the index is rebuilt, and questions are answered."""
    from bot.config import Settings
    from bot.storage.store import Store, UserInfo
    from bot.wiring import build_services, open_database
    from tests.fakes import FakeChatModel

    (env / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days of a return.")
    assert run(capsys, "kb", "add", "refunds.md")[0] == 0
    db = open_database(Settings())
    store = Store(db)
    store.upsert_user(UserInfo(7))
    conversation = store.active_conversation(7)
    answer = store.add_message(conversation, "assistant", "Within 14 days.", prompt="p")
    store.rate(answer, 7, 1)
    db.dispose()
    adapters = env / "data" / "adapters"
    (adapters / "v0001").mkdir(parents=True)
    (adapters / "v0001" / "adapter_config.json").write_text("{}")
    (adapters / "CURRENT").write_text("v0001")

    code, out, _ = run(capsys, "db", "backup", str(env / "backup"))
    assert code == 0 and "1 adapter version(s) (serving: v0001)" in out
    code, _, err = run(capsys, "db", "backup", str(env / "backup"))
    assert code == 1 and "not empty" in err  # never overwrites an earlier backup

    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(env / "fresh"))
    code, out, _ = run(capsys, "db", "restore", str(env / "backup"))
    assert code == 0 and "serving adapter: v0001" in out
    assert (env / "fresh" / "adapters" / "CURRENT").read_text() == "v0001"
    code, out, _ = run(capsys, "kb", "search", "how long until I get my refund")
    assert code == 0 and "Refunds" in out  # the index was rebuilt from SQL
    services = build_services(Settings(), model=FakeChatModel(), seed=False)
    try:
        assert services.store.user_vote(answer, 7) == 1
        assert services.chat is not None
        reply = services.chat.answer(1, UserInfo(8), "When are refunds paid?")
        assert "14 days" in reply.text and reply.sources == ["Refunds"]
    finally:
        services.close()
    code, _, err = run(capsys, "db", "restore", str(env / "backup"))
    assert code == 1 and "--force" in err  # an existing database is not replaced silently
    assert run(capsys, "db", "restore", "--force", str(env / "backup"))[0] == 0

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@localhost/assistant")
    code, _, err = run(capsys, "db", "backup", str(env / "pg"))
    assert code == 1 and "pg_dump" in err

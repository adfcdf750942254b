from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import Settings


def test_admin_ids_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "1, 22,333")
    assert Settings().admin_ids == {1, 22, 333}


def test_bad_admin_ids_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "1,alice")
    with pytest.raises(ValidationError, match="numeric Telegram user ids"):
        Settings()


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEGRAM_API_URL", raising=False)
    (tmp_path / ".env").write_text("ASSISTANT_DATA_DIR=/srv/bot\nTELEGRAM_API_URL=http://x:1\n"
                                   "RETRIEVAL_K=7\n")
    monkeypatch.setenv("RETRIEVAL_K", "2")
    s = Settings()
    assert s.data_dir == Path("/srv/bot")
    assert s.telegram_api_url == "http://x:1"
    assert s.retrieval_k == 2


def test_defaults_put_everything_in_the_data_dir(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    s = Settings(data_dir=tmp_path / "d")
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'd' / 'assistant.db'}"
    assert s.chroma_dir == tmp_path / "d" / "chroma"
    assert s.models_dir == tmp_path / "d" / "models"
    assert s.telegram_api_url == "https://api.telegram.org"


def test_how_many_chunks_answering_looks_among_keeps_its_old_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOK_AMONG_K", "12")
    assert Settings(_env_file=None).look_among_k == 12
    monkeypatch.delenv("LOOK_AMONG_K")
    monkeypatch.setenv("SECOND_LOOK_K", "0")  # its name before session 32
    assert Settings(_env_file=None).look_among_k == 0

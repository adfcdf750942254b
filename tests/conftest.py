from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"

from bot.config import Settings  # noqa: E402
from bot.wiring import Services, build_services  # noqa: E402
from tests.botapi import BotAPIEmulator  # noqa: E402
from tests.fakes import FakeChatModel, FakeEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Converted real models are cached here across test runs (the GGUF conversion takes ~20 s).
MODEL_CACHE = Path(os.environ.get("TEST_MODEL_CACHE", ROOT / ".cache" / "models"))


# `E2E_BACKENDS=servers` (`make test-servers`, run by .ci/run): the tests marked `e2e` run
# against PostgreSQL and a `chroma run` server instead of a SQLite file and embedded Chroma.
SERVER_BACKENDS = os.environ.get("E2E_BACKENDS", "") == "servers"


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """DATABASE_URL and CHROMA_URL for this test: empty (the embedded defaults), or for an
    `e2e` test under E2E_BACKENDS=servers a fresh PostgreSQL database and a new Chroma server."""
    if not (SERVER_BACKENDS and request.node.get_closest_marker("e2e")):
        return {"DATABASE_URL": "", "CHROMA_URL": ""}
    from tests.chroma import chroma_server
    from tests.postgres import fresh_database

    database = fresh_database(request.getfixturevalue("postgres_url"))
    servers = ExitStack()
    request.addfinalizer(servers.close)

    def nothing_embedded() -> None:  # the servers were used, not the embedded fall-backs
        local = [f for f in [*tmp_path.rglob("assistant.db"), *tmp_path.rglob("chroma.sqlite3")]
                 if "chroma-server" not in f.parts]
        assert not local, f"{request.node.name} wrote embedded stores: {local}"

    request.addfinalizer(nothing_embedded)
    return {"DATABASE_URL": database,
            "CHROMA_URL": servers.enter_context(chroma_server(tmp_path / "chroma-server"))}


def use_backend(monkeypatch: pytest.MonkeyPatch, backend: dict[str, str]) -> None:
    """Point the environment (subprocesses, `Settings()`) at this test's backends."""
    for var, value in backend.items():
        if value:
            monkeypatch.setenv(var, value)
        else:
            monkeypatch.delenv(var, raising=False)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: dict[str, str]) -> Settings:
    monkeypatch.chdir(tmp_path)  # keep a developer's .env out of the tests
    for var in ("TELEGRAM_BOT_TOKEN", "ADMIN_IDS", "BASE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    use_backend(monkeypatch, backend)
    return Settings(data_dir=tmp_path / "data", model_cache_dir=MODEL_CACHE,
                    telegram_bot_token="123456:TEST-TOKEN", admin_ids=frozenset({42}),
                    database_url=backend["DATABASE_URL"], chroma_url=backend["CHROMA_URL"])


@pytest.fixture
def fake_model() -> FakeChatModel:
    return FakeChatModel()


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def services(settings: Settings, fake_model: FakeChatModel, embedder: FakeEmbedder) -> Services:
    """Real SQLite and real embedded Chroma, with the fake model and embedder; not seeded."""
    svc = build_services(settings, model=fake_model, embedder=embedder, seed=False)
    yield svc
    svc.close()


@pytest.fixture
def grounded(services: Services) -> Services:
    """Services where every question retrieves one document (for tests about something else
    than relevance, which has tests of its own)."""
    from dataclasses import replace

    services.knowledge.add_text("Notes", "These are the general notes of the team.", "t:notes",
                                "test")
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    return services


@pytest.fixture
async def botapi() -> BotAPIEmulator:
    emu = BotAPIEmulator()
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    from tests.postgres import postgres_cluster

    with postgres_cluster() as url:
        yield url


@pytest.fixture
async def start_bot(settings: Settings, services: Services, botapi: BotAPIEmulator):
    """Start the real PTB Application against the emulator (long polling over HTTP)."""
    from bot.telegram_app import build_application

    apps = []

    async def start():  # type: ignore[no-untyped-def]
        app = build_application(settings.model_copy(update={"telegram_api_url": botapi.url}),
                                services)
        await app.initialize()
        if app.post_init:  # as run_polling does: start-up work, crash recovery included
            await app.post_init(app)
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        apps.append(app)
        return app

    yield start
    for app in apps:
        await stop_bot(app)


async def stop_bot(app) -> None:  # type: ignore[no-untyped-def]
    if app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
        await app.shutdown()

"""LLM_URL: an OpenAI-compatible server generates, over real HTTP (a stand-in server here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.config import Settings
from bot.model.remote import OpenAIChatModel, RemoteModelError
from bot.storage.store import UserInfo
from bot.wiring import build_services
from tests.fakes import FakeEmbedder


class CompletionServer(ThreadingHTTPServer):
    """`/v1/models` and streaming `/v1/chat/completions`, as vLLM serves them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.reply = ["The office opens", " at 9:00."]
        self.status = 200
        self.failures = 0  # answer this many completions with 503 first
        self.adapters: dict[str, str] = {}  # vLLM's runtime LoRA registry: name -> path
        self.refuse_adapters = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: CompletionServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "smollm2-grounded"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({**request, "auth": self.headers.get("Authorization"),
                                     "path": self.path})
        if self.path.endswith("_lora_adapter"):
            return self._lora(request)
        status = self.server.status
        if self.server.failures:
            self.server.failures -= 1
            status = 503
        if status == 200 and request["model"] not in ("smollm2-grounded", *self.server.adapters):
            status = 404
        if status != 200:
            self.send_response(status)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"oops!")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        reply = [*self.server.reply, f" ({request['model']})"] if self.server.adapters \
            else self.server.reply
        chunks = [{"role": "assistant"}] + [{"content": c} for c in reply]
        for delta in chunks:
            event = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _lora(self, request: dict) -> None:
        """vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter."""
        name, ok = request["lora_name"], not self.server.refuse_adapters
        if ok and self.path.endswith("/load_lora_adapter"):
            self.server.adapters[name] = request["lora_path"]
        elif ok:
            ok = self.server.adapters.pop(name, None) is not None
        body = f"Success: LoRA adapter '{name}'" if ok else "The adapter could not be found"
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture
def server() -> Iterator[CompletionServer]:
    srv = CompletionServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_answers_stream_from_the_server_through_the_whole_answer_path(
        server: CompletionServer, settings: Settings) -> None:
    remote = settings.model_copy(update={"llm_url": server.url, "llm_api_key": "sekret"})
    services = build_services(remote, embedder=FakeEmbedder(), seed=False)
    try:
        services.knowledge.add_text("Opening hours", "The office opens at 9:00 on weekdays.",
                                    source="test:hours", actor="test")
        seen: list[str] = []
        reply = services.chat.answer(1, UserInfo(5), "When does the office open?",
                                     on_text=seen.append)
    finally:
        services.close()
    assert reply.grounding == "verified" and "9:00" in reply.text
    assert reply.sources == ["Opening hours"] and reply.adapter_version == "remote:smollm2-grounded"
    assert seen[-1] == "The office opens at 9:00." and len(seen) == 2  # streamed as it grew
    sent = server.requests[0]
    assert sent["model"] == "smollm2-grounded" and sent["stream"] is True
    assert sent["auth"] == "Bearer sekret"
    assert "<excerpt source=\"Opening hours\">" in sent["messages"][-1]["content"]
    assert sent["messages"][0]["role"] == "system"


def test_a_failing_server_is_an_error_the_bot_can_apologise_for(server: CompletionServer) -> None:
    model = OpenAIChatModel(server.url, model="m", retry_delay=0.01)
    server.status = 503
    with pytest.raises(RemoteModelError, match="503"):
        model.generate([{"role": "user", "content": "hi"}])
    with pytest.raises(RemoteModelError, match="set LLM_MODEL"):
        OpenAIChatModel("http://127.0.0.1:9/v1", timeout=1)  # nothing listens there


def promote(adapters: Path, version: str | None) -> None:
    """What the nightly run and `tune rollback` do to the registry (None: back to the base)."""
    if version:
        (adapters / version).mkdir(parents=True, exist_ok=True)
        (adapters / version / "adapter_config.json").write_text("{}")
    (adapters / "CURRENT").write_text(version or "")


def test_the_engine_serves_the_promoted_adapter_and_follows_rollback(
        server: CompletionServer, tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    model = OpenAIChatModel(server.url, adapters_dir=adapters,
                            engine_adapters_dir="/mnt/shared/adapters/")
    ask = [{"role": "user", "content": "When does the office open?"}]
    first = model.generate(ask)
    assert first.adapter_version == "base" and server.requests[-1]["model"] == "smollm2-grounded"

    promote(adapters, "v0001")
    answer = model.generate(ask)
    load = server.requests[-2]
    assert load["path"] == "/v1/load_lora_adapter"
    assert load["lora_path"] == "/mnt/shared/adapters/v0001"  # as the engine sees the volume
    assert answer.adapter_version == "v0001" and answer.text.endswith("(v0001)")

    promote(adapters, "v0002")
    assert model.generate(ask).text.endswith("(v0002)")
    promote(adapters, "v0001")  # rollback: still loaded, so no second load
    assert model.generate(ask).text.endswith("(v0001)")
    assert [r["lora_name"] for r in server.requests if "lora_name" in r] == ["v0001", "v0002"]
    for version in ("v0003", "v0004"):
        promote(adapters, version)
        model.generate(ask)
    assert sorted(server.adapters) == ["v0002", "v0003", "v0004"]  # the oldest was unloaded
    promote(adapters, None)
    assert model.generate(ask).adapter_version == "base"

    server.refuse_adapters = True  # an adapter the engine cannot load: keep serving, say so
    promote(adapters, "v0005")
    kept = model.generate(ask)
    assert kept.adapter_version == "base" and server.requests[-1]["model"] == "smollm2-grounded"


def test_an_engine_that_restarts_is_asked_again_and_one_that_stays_down_is_a_clear_error(
        server: CompletionServer) -> None:
    model = OpenAIChatModel(server.url, model="smollm2-grounded", retry_delay=0.01)
    server.failures = 2  # two 503s while it restarts, then it answers
    answer = model.generate([{"role": "user", "content": "hi"}])
    assert answer.text == "The office opens at 9:00."
    assert len([r for r in server.requests if r["path"].endswith("completions")]) == 3

    server.failures = 10
    with pytest.raises(RemoteModelError, match="503"):
        model.generate([{"role": "user", "content": "hi"}])
    down = OpenAIChatModel("http://127.0.0.1:9/v1", model="m", retry_delay=0.01, timeout=1)
    with pytest.raises(RemoteModelError, match="failed"):
        down.generate([{"role": "user", "content": "hi"}])

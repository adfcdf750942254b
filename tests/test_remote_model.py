"""LLM_URL: an OpenAI-compatible server generates, over real HTTP (a stand-in server here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        self.server.requests.append({**request, "auth": self.headers.get("Authorization")})
        if self.server.status != 200:
            self.send_response(self.server.status)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"oops!")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunks = [{"role": "assistant"}] + [{"content": c} for c in self.server.reply]
        for delta in chunks:
            event = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


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
    model = OpenAIChatModel(server.url, model="m")
    server.status = 503
    with pytest.raises(RemoteModelError, match="503"):
        model.generate([{"role": "user", "content": "hi"}])
    with pytest.raises(RemoteModelError, match="set LLM_MODEL"):
        OpenAIChatModel("http://127.0.0.1:9/v1", timeout=1)  # nothing listens there

"""A Telegram Bot API emulator on 127.0.0.1 for tests: real HTTP, the self-hosted URL layout.

Tests inject messages and button presses, the bot long-polls them with getUpdates, and every
call the bot makes is recorded. Failures (HTTP status + Bot API error) can be queued per method.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TEXT_PARAMS = {"text", "caption", "callback_query_id", "query", "secret_token", "url", "action",
               "parse_mode", "description", "short_description", "title"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class BotAPIEmulator:
    """Start with `await emu.start()`; its `url` is what TELEGRAM_API_URL should be."""

    def __init__(self, token: str = "123456:TEST-TOKEN", bot_id: int = 123456,
                 username: str = "assistant_test_bot") -> None:
        self.token = token
        self.bot = {"id": bot_id, "is_bot": True, "first_name": "Assistant", "username": username,
                    "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.history: dict[int, dict[str, Any]] = {}
        self.uploads: list[tuple[str, bytes]] = []  # (field name, bytes) of files the bot sent
        self.webhook_url: str | None = None  # set by setWebhook: updates are then POSTed there
        self.webhook_secret: str | None = None
        self.webhook_responses: list[int] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat id, message id) -> msg
        self.chats: dict[int, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}  # file_id -> content (file_path is "documents/<id>")
        self.failures: dict[str, deque[tuple[int, dict[str, Any]]]] = defaultdict(deque)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._callback_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- server ------------------------------------------------------------------------------

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on `host` (0.0.0.0 for containers to reach it; `url` still says 127.0.0.1)."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        raw = dict(request.query)
        if request.method == "POST":
            for key, value in (await request.post()).items():
                if isinstance(value, str):
                    raw[key] = value
                else:  # an uploaded file (multipart): keep its bytes for the test to inspect
                    self.uploads.append((key, value.file.read()))
        params: dict[str, Any] = {}
        for key, value in raw.items():  # PTB sends form fields, JSON-encoding non-strings
            if key in TEXT_PARAMS:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except (TypeError, ValueError):
                params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append(Call(method, params))
        if self.failures[method]:
            status, body = self.failures[method].popleft()
            return web.json_response(body, status=status)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404,
                                      "description": f"Not Found: method {method} not emulated"},
                                     status=404)
        result = await handler(params)
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        self.calls.append(Call("download", {"path": request.match_info["path"]}))
        file_id = request.match_info["path"].removeprefix("documents/")
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])

    # --- Bot API methods ---------------------------------------------------------------------

    async def _api_getMe(self, p: dict[str, Any]) -> Any:
        return self.bot

    async def _api_deleteWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook_url = None
        return True

    async def _api_setMyCommands(self, p: dict[str, Any]) -> Any:
        return True

    async def _api_sendChatAction(self, p: dict[str, Any]) -> Any:
        return True

    async def _api_setWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook_url = p["url"]
        self.webhook_secret = p.get("secret_token")
        return True

    async def _api_answerCallbackQuery(self, p: dict[str, Any]) -> Any:
        return True

    async def _api_getFile(self, p: dict[str, Any]) -> Any:
        file_id = str(p["file_id"])
        if file_id not in self.files:
            raise web.HTTPBadRequest(text=json.dumps({"ok": False, "error_code": 400,
                                                      "description": "Bad Request: file is too big"}),
                                     content_type="application/json")
        return {"file_id": file_id, "file_unique_id": f"u{file_id}",
                "file_size": len(self.files[file_id]), "file_path": f"documents/{file_id}"}

    async def _api_getUpdates(self, p: dict[str, Any]) -> Any:
        offset = int(p.get("offset") or 0)
        limit = int(p.get("limit") or 100)
        timeout = float(p.get("timeout") or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while not self.updates and time.monotonic() < deadline:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self.updates[:limit]

    def _store_message(self, chat_id: int, p: dict[str, Any]) -> dict[str, Any]:
        message_id = next(self._message_ids)
        msg: dict[str, Any] = {"message_id": message_id, "date": int(time.time()),
                               "chat": self.chats.get(chat_id, {"id": chat_id, "type": "private"}),
                               "from": self.bot, "text": p.get("text", "")}
        markup = p.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:  # as Telegram returns it
            msg["reply_markup"] = markup
        self.messages[(chat_id, message_id)] = msg
        return msg

    async def _api_sendMessage(self, p: dict[str, Any]) -> Any:
        return self._store_message(int(p["chat_id"]), p)

    async def _api_sendPhoto(self, p: dict[str, Any]) -> Any:
        msg = self._store_message(int(p["chat_id"]), {"text": ""})
        msg.pop("text")
        msg["photo"] = [{"file_id": "photo1", "file_unique_id": "p1", "width": 600, "height": 350}]
        msg["caption"] = p.get("caption", "")
        return msg

    async def _api_editMessageText(self, p: dict[str, Any]) -> Any:
        key = (int(p["chat_id"]), int(p["message_id"]))
        msg = self.messages.get(key)
        if msg is None:
            raise web.HTTPBadRequest(text=json.dumps({
                "ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}),
                content_type="application/json")
        msg["text"] = p["text"]
        msg["edit_date"] = int(time.time())
        if "reply_markup" in p:
            msg["reply_markup"] = p["reply_markup"]
        else:  # as Telegram does: an edit without a keyboard removes the inline keyboard
            msg.pop("reply_markup", None)
        return msg

    # --- what tests use ----------------------------------------------------------------------

    def _push(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, **update})
        self.history[update_id] = self.updates[-1]
        if self.webhook_url:
            self.updates.pop()
            asyncio.get_running_loop().create_task(self._deliver(self.history[update_id]))
        self._new_update.set()
        return update_id

    async def post_webhook(self, update: dict[str, Any], secret: str | None = "default") -> int:
        """Deliver an update to the bot's webhook as Telegram does; returns the HTTP status."""
        import aiohttp

        secret = self.webhook_secret if secret == "default" else secret
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with aiohttp.ClientSession() as session, session.post(
                self.webhook_url, json=update, headers=headers) as response:
            self.webhook_responses.append(response.status)
            return response.status

    async def _deliver(self, update: dict[str, Any], attempts: int = 60) -> None:
        """Push an update to the webhook; like Telegram, try again later while the bot's server
        cannot be reached (a bot sets its webhook before its server is always listening)."""
        import aiohttp

        for _ in range(attempts - 1):
            try:
                await self.post_webhook(update)
                return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.5)
        await self.post_webhook(update)

    def redeliver(self, update_id: int) -> None:
        """Offer an update again, as Telegram does when a bot crashed before confirming it."""
        self.updates.append(self.history[update_id])
        self._new_update.set()

    async def restart(self, down_for: float = 1.0) -> None:
        """Stop serving, then serve again on the same port (state kept), like a server restart."""
        port = int(self.url.rsplit(":", 1)[1])
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start(port)

    @staticmethod
    def user(user_id: int, first_name: str = "Test", language_code: str = "en") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name,
                "username": f"user{user_id}", "language_code": language_code}

    def send_text(self, user_id: int, text: str, *, chat_id: int | None = None,
                  chat_type: str = "private", reply_to: dict[str, Any] | None = None,
                  language_code: str = "en") -> dict[str, Any]:
        """Inject a text message from a user; returns the message as the bot will see it."""
        chat_id = chat_id if chat_id is not None else user_id
        chat = {"id": chat_id, "type": chat_type}
        if chat_type != "private":
            chat["title"] = f"Group {chat_id}"
        self.chats[chat_id] = chat
        message: dict[str, Any] = {"message_id": next(self._message_ids), "date": int(time.time()),
                                   "chat": chat, "from": self.user(user_id, language_code=language_code),
                                   "text": text}
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self.messages[(chat_id, message["message_id"])] = message
        self._push({"message": message})
        return message

    def send_document(self, user_id: int, file_name: str, data: bytes, *,
                      file_size: int | None = None, chat_id: int | None = None,
                      chat_type: str = "private") -> dict[str, Any]:
        """Inject a file upload; `file_size` may claim more than `data` (for size limits)."""
        chat_id = chat_id if chat_id is not None else user_id
        chat = self.chats.setdefault(chat_id, {"id": chat_id, "type": chat_type})
        file_id = f"f{len(self.files) + 1}"
        self.files[file_id] = data
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat,
                   "from": self.user(user_id),
                   "document": {"file_id": file_id, "file_unique_id": f"u{file_id}",
                                "file_name": file_name, "file_size": file_size or len(data)}}
        self.messages[(chat_id, message["message_id"])] = message
        self._push({"message": message})
        return message

    def press_button(self, user_id: int, message: dict[str, Any], data: str,
                     language_code: str = "en") -> str:
        """Inject a callback query (an inline button press) on one of the bot's messages."""
        callback_id = str(next(self._callback_ids))
        self._push({"callback_query": {"id": callback_id,
                                       "from": self.user(user_id, language_code=language_code),
                                       "chat_instance": "1", "message": message, "data": data}})
        return callback_id

    def fail_next(self, method: str, status: int = 500, description: str = "Internal Server Error",
                  retry_after: int | None = None) -> None:
        """Make the next call of `method` fail with this HTTP status and Bot API error."""
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        self.failures[method].append((status, body))

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Messages the bot sent, in order."""
        return [m for (cid, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1])
                if m["from"].get("is_bot") and (chat_id is None or cid == chat_id)
                and "text" in m]

    async def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> Any:  # type: ignore[no-untyped-def]
        """Poll `predicate()` until it returns something truthy; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                             f"calls: {[c.method for c in self.calls][-20:]}")

    async def wait_for_message(self, chat_id: int, count: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """The `count`-th message the bot sent to `chat_id`, once it is final (a streamed
        answer is shown with a trailing " …" until its last edit)."""

        def settled() -> dict[str, Any] | None:
            msgs = self.sent_messages(chat_id)
            if len(msgs) >= count and not msgs[count - 1]["text"].endswith(" …"):
                return msgs[count - 1]
            return None

        return await self.wait_for(settled, timeout, f"message #{count} to {chat_id}")

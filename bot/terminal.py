"""`assistant chat`: the same pipeline as the bot, in a terminal."""

from __future__ import annotations

import logging
from typing import TextIO

from bot.services import UserError
from bot.services.feedback import THUMBS_DOWN, THUMBS_UP
from bot.storage.store import UserInfo
from bot.wiring import Services

logger = logging.getLogger(__name__)

TERMINAL_USER = UserInfo(id=0, username="terminal", first_name="Terminal")
TERMINAL_CHAT = 0
HELP = ("Type a question. After an answer: /up or /down rates it. "
        "/reset starts over, /quit (or Ctrl-D) leaves.")


def chat_loop(services: Services, stdin: TextIO, stdout: TextIO) -> int:
    """Read questions line by line until EOF or /quit; stream answers; accept ratings."""
    chat = services.chat
    assert chat is not None, "chat_loop needs services built with the chat model"
    interactive = stdin.isatty()
    print(f"Assistant ready. {HELP}", file=stdout)
    last_message_id: int | None = None
    while True:
        if interactive:
            print("\nyou> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/help":
            print(HELP, file=stdout)
        elif text == "/reset":
            chat.reset(TERMINAL_CHAT)
            print("Started a new conversation.", file=stdout)
        elif text in ("/up", "/down"):
            if last_message_id is None:
                print("Nothing to rate yet.", file=stdout)
                continue
            value = THUMBS_UP if text == "/up" else THUMBS_DOWN
            outcome = services.feedback.rate(last_message_id, TERMINAL_USER, value)
            print(f"Rating {outcome.value}.", file=stdout)
        else:
            last_message_id = _ask(services, text, stdout) or last_message_id
    print("Bye.", file=stdout)
    return 0


def _ask(services: Services, text: str, stdout: TextIO) -> int | None:
    printed = 0

    def stream(partial: str) -> None:
        nonlocal printed
        partial = partial.lstrip()
        stdout.write(partial[printed:])
        stdout.flush()
        printed = len(partial)

    print("assistant> ", end="", file=stdout, flush=True)
    try:
        assert services.chat is not None  # built with the chat model
        reply = services.chat.answer(TERMINAL_CHAT, TERMINAL_USER, text, on_text=stream)
    except UserError as exc:
        print(str(exc), file=stdout)
        return None
    except Exception:
        logger.exception("Answering failed")
        print("\nSorry, something went wrong while answering.", file=stdout)
        return None
    # The stream shows raw tokens; print the rest of the stored answer and its sources.
    rendered = reply.render()
    print(rendered[printed:] if rendered.startswith(reply.text[:printed]) else f"\n{rendered}",
          file=stdout)
    print("(rate with /up or /down)", file=stdout)
    return reply.message_id

"""llama.cpp (llama-cpp-python) on the packaged GGUF, in-process, one sequence at a time.

Runs in the bench's own virtual environment (see run.py), so it imports only llama_cpp and the
harness. Usage: llamacpp_worker.py PROMPTS.json OUT.json GGUF MAX_NEW_TOKENS LEVELS...
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import run  # noqa: E402
from llama_cpp import Llama  # noqa: E402


def main() -> None:
    prompts_file, out, gguf, max_new, *levels = sys.argv[1:]
    spec = json.loads(Path(prompts_file).read_text())
    llm = Llama(model_path=gguf, n_ctx=4096, n_threads=os.cpu_count() or 1, n_batch=512,
                verbose=False)
    lock = threading.Lock()  # one Llama runs one sequence; concurrent chats queue here

    def generate(prompt: str, on_token) -> int:  # type: ignore[no-untyped-def]
        tokens = 0
        with lock:
            for _chunk in llm.create_completion(prompt, max_tokens=int(max_new), temperature=0.0,
                                                stop=spec["stop"], stream=True):
                on_token()
                tokens += 1
            llm.reset()  # no prefix reuse between chats: every runtime reads the whole prompt
        return tokens

    run("llama.cpp", generate, spec["texts"], [int(n) for n in levels], Path(out),
        runtime="llama-cpp-python " + __import__("llama_cpp").__version__)


if __name__ == "__main__":
    main()

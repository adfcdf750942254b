"""What this machine's CPU can do, for the runtimes that choose a number format by it (the
embedder's bulk path here, the chat model's dtype and 4-bit answers in bot/model)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot tell."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bfloat16_in_hardware() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (AMX tiles)."""
    return "amx_tile" in cpu_flags()

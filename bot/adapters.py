"""Where LoRA adapters live and which one is current (read side; `tuning` writes).

Layout under `{data_dir}/adapters/`: one directory per version (`v0001`, `v0002`, ...), never
overwritten, and a `CURRENT` file naming the serving version. `CURRENT` is replaced atomically
(write a temporary file, then `os.replace`), so a reader sees the old name or the new one.
"""

from __future__ import annotations

from pathlib import Path

POINTER = "CURRENT"


def current_adapter(root: Path) -> tuple[str, Path] | None:
    """(version, directory) of the serving adapter, or None to serve the base model."""
    try:
        version = (root / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not version:
        return None
    path = root / version
    if not (path / "adapter_config.json").exists():
        return None
    return version, path

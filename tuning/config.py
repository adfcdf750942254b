"""Training knobs: one dataclass that is both the config and the CLI flags (as TRL does).

Every run records the exact values it used.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any


@dataclass
class TuneConfig:
    method: str = field(default="lora", metadata={
        "help": "lora, or prompt-tuning (cheaper: trains only a few virtual tokens)",
        "choices": ["lora", "prompt-tuning"]})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate"})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training split"})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs)"})
    batch_size: int = field(default=8, metadata={"help": "Examples per device step"})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "LoRA dropout (on CPU it costs ~15% of a training step)"})
    target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={
        "help": "Comma-separated module names LoRA adapts"})
    num_virtual_tokens: int = field(default=16, metadata={"help": "Prompt-tuning tokens"})
    max_length: int = field(default=768, metadata={"help": "Longest example, in tokens"})
    seed: int = field(default=42, metadata={"help": "Seed for splits, init and shuffling"})
    eval_every: int = field(default=10, metadata={"help": "Evaluate on validation every N steps"})
    patience: int = field(default=3, metadata={
        "help": "Early stopping: evaluations without validation improvement"})
    val_fraction: float = field(default=0.15, metadata={"help": "Share of dialogs for validation"})
    test_fraction: float = field(default=0.15, metadata={"help": "Share of dialogs for test"})
    max_rows_per_user: int = field(default=50, metadata={
        "help": "Nightly: most training rows one user may contribute per run"})
    min_rows: int = field(default=20, metadata={
        "help": "Nightly: fewer new rows than this and the run is skipped"})
    golden_margin: float = field(default=0.05, metadata={
        "help": "Gate: the candidate may be this much worse on the golden set, no more"})
    grounding_margin: float = field(default=0.1, metadata={
        "help": "Gate: the share of grounded answers to held-out prompts may drop this much"})
    unsupported_margin: float = field(default=0.1, metadata={
        "help": "Gate: how much (relative) the loss on held-out preferred answers that their "
                "excerpts do not support may fall; more means it learned content, not style"})
    resume: bool = field(default=False, metadata={
        "help": "Continue from the last complete checkpoint of an interrupted run"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


def add_arguments(parser: argparse.ArgumentParser, cls: type = TuneConfig) -> None:
    """One `--flag` per dataclass field, with its type, default, help and choices."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        # argparse %-formats help strings: a literal "%" must be doubled.
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type), type(default))
        parser.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text,
                            choices=f.metadata.get("choices"))


def from_arguments(args: argparse.Namespace, cls: type = TuneConfig) -> TuneConfig:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

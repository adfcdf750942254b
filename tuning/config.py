"""Training knobs: dataclasses that are both the config and the CLI flags, as TRL does.

The knobs come in three groups: how to train (`TrainingConfig`), which data to train and
judge on (`DataConfig`), and when a candidate may serve (`GateConfig`). transformers'
`HfArgumentParser` turns them into `--flags` (`--learning-rate` or `--learning_rate`) with
their help texts; `TuneConfig` holds all three, and every run records the values it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bot.prompting import MAX_EXAMPLE_TOKENS


@dataclass
class TrainingConfig:
    _argument_group_name = "training"

    method: str = field(default="lora", metadata={
        "help": "lora, or prompt-tuning (cheaper: trains only a few virtual tokens)",
        "choices": ["lora", "prompt-tuning"]})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate"})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training split"})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs)"})
    batch_size: int = field(default=4, metadata={
        "help": "Examples per forward/backward pass (on 2 CPU cores 4 is ~1.3x faster per token "
                "than 8 and needs ~1 GB less memory; see bench/nightly)"})
    grad_accum: int = field(default=2, metadata={
        "help": "Passes whose gradients add up to one optimizer step (default: steps of 8 rows)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "LoRA dropout (on CPU it costs ~15%% of a training step)"})
    target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={
        "help": "Comma-separated module names LoRA adapts"})
    train_layers: int = field(default=10, metadata={
        "help": "LoRA: train the adapter in the top N decoder layers only, the rest stay as "
                "they are (0: all); backpropagation then stops at layer N from the top"})
    bf16: str = field(default="auto", metadata={
        "help": "Train in bfloat16: auto (on a GPU that has it; on a CPU float32: with AMX "
                "bfloat16 saved 4%% of a night for 1.2 GB more memory, without it bfloat16 is "
                "emulated and slower), on, off. A GPU autocasts; a CPU with `on` holds the "
                "frozen base in bfloat16, the adapter in float32",
        "choices": ["auto", "on", "off"]})
    num_virtual_tokens: int = field(default=16, metadata={"help": "Prompt-tuning tokens"})
    max_length: int = field(default=MAX_EXAMPLE_TOKENS, metadata={
        "help": "Longest example, in tokens: the bot's prompt budget plus an answer"})
    evidence_only: bool = field(default=True, metadata={
        "help": "Train on prompts that keep only the excerpts backing each answer (fewer "
                "tokens); evaluation always uses the prompts as served"})
    share_prefix: int = field(default=16, metadata={
        "help": "LoRA: read the start a batch's rows share (system prompt, excerpt header) "
                "once per batch when it is at least this many tokens (0: never)"})
    max_val_rows: int = field(default=32, metadata={
        "help": "Validation rows checked every --eval-every steps (0: all)"})
    preference: str = field(default="dpo", metadata={
        "help": "Nightly, after SFT (LoRA): a preference objective from TRL on the ratings: "
                "dpo (a correction or 👍 answer against a 👎 one, same prompt), kto (every "
                "rated answer), off. When the gate rejects its candidate for anything but "
                "learning unsupported answers, the adapter as SFT left it is gated instead",
        "choices": ["off", "dpo", "kto"]})
    preference_learning_rate: float = field(default=2e-3, metadata={
        "help": "Peak learning rate of the preference step (its loss is scaled by beta: a "
                "night's few pairs need a rate well above SFT's)"})
    preference_epochs: float = field(default=1.0, metadata={
        "help": "Passes of the preference step over its examples"})
    preference_beta: float = field(default=0.1, metadata={
        "help": "DPO/KTO beta: higher keeps the adapter closer to where SFT left it"})
    preference_sft_weight: float = field(default=0.0, metadata={
        "help": "DPO: weight of a likelihood term on the chosen answers added to the DPO loss "
                "(RPO; TRL's loss_type ['sigmoid', 'sft']), meant to keep what SFT learned "
                "while the pairs move the margin (0: plain DPO)"})
    preference_max_examples: int = field(default=64, metadata={
        "help": "Most pairs (DPO) or rated answers (KTO) one night trains on (0: all)"})
    seed: int = field(default=42, metadata={"help": "Seed for splits, init and shuffling"})
    eval_every: int = field(default=10, metadata={"help": "Evaluate on validation every N steps"})
    patience: int = field(default=3, metadata={
        "help": "Early stopping: evaluations without validation improvement"})
    resume: bool = field(default=False, metadata={
        "help": "Continue from the last complete checkpoint of an interrupted run"})


@dataclass
class DataConfig:
    _argument_group_name = "data"

    val_fraction: float = field(default=0.15, metadata={"help": "Share of dialogs for validation"})
    test_fraction: float = field(default=0.15, metadata={"help": "Share of dialogs for test"})
    max_rows_per_user: int = field(default=50, metadata={
        "help": "Nightly: most training rows one user may contribute per run"})
    min_rows: int = field(default=20, metadata={
        "help": "Nightly: fewer new rows than this and the run is skipped"})
    screen_corrections: bool = field(default=True, metadata={
        "help": "Nightly: hold back corrections the knowledge base does not back, for an "
                "admin to review in /feedback, instead of training on them"})
    repeated_from: int = field(default=3, metadata={
        "help": "Nightly: hold back a correction whose same text came from this many accounts "
                "or more (0: never)"})


@dataclass
class GateConfig:
    _argument_group_name = "gate"

    golden_margin: float = field(default=0.05, metadata={
        "help": "Gate: the candidate may be this much worse on the golden set, no more"})
    grounding_margin: float = field(default=0.1, metadata={
        "help": "Gate: the share of grounded answers to held-out prompts may drop this much"})
    unsupported_margin: float = field(default=0.1, metadata={
        "help": "Gate: how much (relative) the loss on held-out preferred answers that their "
                "excerpts do not support may fall; more means it learned content, not style"})
    eval_prompts: int = field(default=32, metadata={
        "help": "Gate: held-out prompts whose rated answers the likelihood measures (answer "
                "loss, preference accuracy) use, the same for both models (0: all); answers "
                "their excerpts do not support are always all measured"})
    accuracy_margin: float = field(default=0.05, metadata={
        "help": "Gate: the share of held-out answers that give the rated answer's facts may "
                "drop this much"})
    keep_versions: int = field(default=30, metadata={
        "help": "After a run, delete adapter versions but the newest N, the serving one and the "
                "N served most recently (0: keep all); a version is ~11 MB"})


GROUPS = (TrainingConfig, DataConfig, GateConfig)


@dataclass
class TuneConfig(TrainingConfig, DataConfig, GateConfig):
    """Every knob of a tuning run, as one object."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


def parse_config(argv: Sequence[str], prog: str) -> TuneConfig:
    """A `TuneConfig` from command-line flags; `--help` lists them by group and exits."""
    from transformers import HfArgumentParser  # heavy: only when a tuning command runs

    parser = HfArgumentParser(list[Any](GROUPS), prog=prog)
    groups = parser.parse_args_into_dataclasses(args=list(argv))
    return TuneConfig(**{f.name: getattr(g, f.name) for g in groups for f in fields(g)})

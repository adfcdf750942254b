"""Train one adapter: LoRA or prompt tuning with transformers' Trainer, loss on the answer only.

Reads top to bottom: load the base model (and the adapter to continue from), wrap it for peft,
train with validation-based early stopping and checkpoints, save the best adapter into the
staging directory. The serving adapter is never touched here: the registry commits the staging
directory only after the run finished, and promotion is a separate, gated step.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.model import load_model
from tuning.config import TuneConfig
from tuning.dataset import evidence_only
from tuning.runs import release_memory

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    train_tokens: int
    seconds: float
    best_val_loss: float | None
    log_history: list[dict] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.seconds if self.seconds else 0.0


def _peft_config(cfg: TuneConfig, tokenizer):
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if cfg.method == "prompt-tuning":
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text="Answer from the excerpts, cite them, or say you don't know.",
            tokenizer_name_or_path=tokenizer.name_or_path)
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=cfg.modules)


def train_top_layers(model, layers: int) -> int:
    """Freeze the adapter's weights below the top `layers` decoder layers (0: train all).

    Autograd computes gradients only on the way to tensors that need them, so with the lower
    layers frozen a backward pass stops `layers` from the top: on CPU, where a LoRA step is a
    forward and a backward through the whole model, that is most of the step. Returns the
    number of trainable tensors left."""
    total = model.config.num_hidden_layers
    lowest = max(total - layers, 0) if layers > 0 else 0
    trainable = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = re.search(r"\.layers\.(\d+)\.", name)
        if layer and int(layer.group(1)) < lowest:
            param.requires_grad_(False)
        else:
            trainable += 1
    return trainable


def load_for_training(base_path: Path, start_from: Path | None, cfg: TuneConfig):
    """(model, tokenizer): the base with the adapter to continue from, or a fresh adapter;
    a LoRA adapter trains in its top `cfg.train_layers` layers only."""
    model, tokenizer = _load_for_training(base_path, start_from, cfg)
    if cfg.method == "lora":
        train_top_layers(model, cfg.train_layers)
    return model, tokenizer


def _load_for_training(base_path: Path, start_from: Path | None, cfg: TuneConfig):
    import torch
    from peft import PeftConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    # peft keeps the adapter's own weights in float32 on a bfloat16 base (autocast_adapter_dtype)
    dtype = torch.bfloat16 if bf16_base(cfg) else torch.float32
    if start_from is not None:
        previous = PeftConfig.from_pretrained(str(start_from))
        # A `PeftType` (a str enum) before peft 0.22, a plain str or None from 0.22 on.
        same_method = (previous.peft_type == "LORA") == (cfg.method == "lora")
        if same_method:
            logger.info("Continuing from adapter %s", start_from.name)
            return load_model(base_path, start_from, dtype=dtype, trainable=True), tokenizer
        logger.info("Serving adapter is another method; starting a fresh %s adapter", cfg.method)
    return get_peft_model(load_model(base_path, dtype=dtype, trainable=True),
                          _peft_config(cfg, tokenizer)), tokenizer


def as_served(base_path: Path, adapter_dir: Path | None):
    """The adapter saved in `adapter_dir` (None: the base alone) on the float32 base, merged:
    a candidate, or the serving adapter, measured as it serves. Callers drop their training
    copy first (one model in memory at a time; on a CPU training in bfloat16 its base weights
    were rounded); what it left is freed here."""
    release_memory()
    return load_model(base_path, adapter_dir)


def encode(tokenizer, row: dict, max_length: int) -> dict | None:
    """Token ids of prompt + answer + EOS, with labels only on the answer (-100 elsewhere).

    None when the row is longer than `max_length`: cutting the prompt would cut its start, the
    system prompt, and train the model on prompts it is never served (the bot's prompt budget,
    `ChatLimits.max_prompt_tokens`, keeps served prompts well inside the default)."""
    prompt = tokenizer(str(row["prompt"]), add_special_tokens=False)["input_ids"]
    answer = tokenizer(str(row["completion"]), add_special_tokens=False)["input_ids"]
    answer = answer + [tokenizer.eos_token_id]
    if len(prompt) + len(answer) > max_length:
        return None
    return {"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
            "labels": [-100] * len(prompt) + answer}


class AnswerOnlyCollator:
    """Left-pads a batch so every answer ends at the last position, then keeps labels for the
    last K positions only (K: the longest answer in the batch, plus one) and asks the model for
    logits there only (`logits_to_keep`). The LM head and the loss over a 49k vocabulary then
    run on the answers, not on the long prompts: a third less work per step on CPU.
    Prompt tuning prepends virtual tokens to the labels inside peft, so there (`trim=False`)
    labels and logits cover the whole sequence.

    With `share_prefix` (LoRA only), the start all rows of the batch have in common (the system
    prompt and the line introducing the excerpts: a quarter of an evidence-only row), at least
    that many tokens, goes out once as `prefix_ids`; `PrefixTrainer` reads it once and every
    row continues from it, laid out `[start][pads][row]` with positions of an unpadded row."""

    def __init__(self, pad_token_id: int, trim: bool = True, share_prefix: int = 0) -> None:
        self.pad = pad_token_id
        self.trim = trim
        self.share_prefix = share_prefix

    def _shared(self, features: list[dict]) -> int:
        if not self.share_prefix or len(features) < 2:
            return 0
        first, n = features[0]["input_ids"], min(len(f["input_ids"]) for f in features) - 1
        for f in features[1:]:
            n = next((i for i in range(n) if f["input_ids"][i] != first[i]), n)
        labelled = min(next(i for i, x in enumerate(f["labels"]) if x != -100)
                       for f in features)
        n = min(n, labelled - 1)  # prompt only, and each row keeps a prompt token
        return n if n >= self.share_prefix else 0

    def __call__(self, features: list[dict]) -> dict:
        import torch

        shared = self._shared(features)
        own = [list(f["input_ids"])[shared:] for f in features]
        width = max(map(len, own))
        keep = max(sum(label != -100 for label in f["labels"]) for f in features) + 1
        keep = keep if self.trim else width
        ids, mask, labels = [], [], []
        for f, row in zip(features, own, strict=True):
            pad = width - len(row)
            ids.append([self.pad] * pad + row)
            mask.append([1] * shared + [0] * pad + list(f["attention_mask"])[shared:])
            labels.append(([-100] * pad + list(f["labels"])[shared:])[-keep:])
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                 "labels": torch.tensor(labels)}
        if shared:
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            batch |= {"prefix_ids": torch.tensor([list(features[0]["input_ids"])[:shared]]),
                      "position_ids": positions[:, shared:]}
        return batch | ({"logits_to_keep": keep} if self.trim else {})


def read_prefix(model, prefix_ids, rows: int):
    """The key/value cache of `prefix_ids` (one row), read once and repeated for `rows` rows;
    gradients from every row flow back into the one reading."""
    from transformers import DynamicCache

    cache = DynamicCache()
    model(input_ids=prefix_ids, cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(rows)
    return cache


def use_bf16(setting: str) -> bool:
    """`--bf16 auto|on|off` → whether training computes in bfloat16 here: `auto` on a GPU that
    has it, never on a CPU. Measured on a 2-core AMX CPU, the 1,000-exchange night (README,
    "One nightly run"): training 267 s in bfloat16 against 298 s in float32, the whole run 6.9
    against 7.1 min, but peak memory 4.5 GB against 3.3 GB (oneDNN's cache of bfloat16
    kernels is 0.5 GB of it), past the night's 4 GB; on CPUs without AMX or AVX512-BF16 bfloat16 is
    emulated and several times slower. `--bf16 on` is there for a CPU with memory to spare."""
    import torch

    if setting != "auto":
        return setting == "on"
    return torch.cuda.is_available() and bool(torch.cuda.is_bf16_supported())


def bf16_base(cfg: TuneConfig) -> bool:
    """bfloat16 on a CPU (LoRA): the frozen base weights are held in bfloat16 and the adapter
    in float32, with no autocast. Autocast kept float32 weights and cast them at every layer:
    on a 2-core AMX CPU the 1,000-exchange night's training took 258 s with autocast against
    267 s with a bfloat16 base, peaking at 4.2 against 3.5 GB in training (4.7 against 4.5 GB
    in all), with the same gate figures. On a GPU, the Trainer's autocast as usual."""
    import torch

    return cfg.method == "lora" and use_bf16(cfg.bf16) and not torch.cuda.is_available()


def autocast_bf16(cfg: TuneConfig) -> bool:
    """Whether the Trainer autocasts to bfloat16 (a GPU; see `bf16_base` for CPUs)."""
    import torch

    return use_bf16(cfg.bf16) and torch.cuda.is_available()


def train(model, tokenizer, train_rows: list[dict], val_rows: list[dict], cfg: TuneConfig,
          checkpoint_dir: Path, out_dir: Path) -> TrainResult:
    """Fine-tune `model` on prompt/completion rows; the best adapter is saved to `out_dir`.

    transformers' `Trainer` with answer-only labels rather than TRL's `SFTTrainer`: on CPU,
    SFTTrainer's fused LM head (a Triton kernel on GPU) falls back to a torch path that made
    training 2.6x slower on this model (see the README); everything else we need (early
    stopping, checkpoints, resume, the best model at the end) is Trainer's."""
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def to_ds(rows: list[dict]) -> Dataset:
        encoded = [e for r in rows if (e := encode(tokenizer, r, cfg.max_length)) is not None]
        if len(encoded) < len(rows):
            logger.warning("Dropped %d rows whose answer alone exceeds %d tokens",
                           len(rows) - len(encoded), cfg.max_length)
        return Dataset.from_list(encoded)

    if cfg.evidence_only:
        train_rows, val_rows = evidence_only(train_rows), evidence_only(val_rows)
    if cfg.max_val_rows > 0:
        val_rows = val_rows[:cfg.max_val_rows]
    train_ds, val_ds = to_ds(train_rows), to_ds(val_rows) if val_rows else None
    has_val = bool(val_ds)
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        eval_strategy="steps" if has_val else "no", eval_steps=cfg.eval_every,
        save_strategy="steps", save_steps=cfg.eval_every, save_total_limit=2,
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss",
        greater_is_better=False, logging_steps=1, report_to=[], seed=cfg.seed,
        data_seed=cfg.seed, lr_scheduler_type="cosine", warmup_steps=0.1,  # 10% of steps
        dataloader_num_workers=0, dataloader_pin_memory=False, save_only_model=False,
        train_sampling_strategy="group_by_length",  # similar lengths batch together: less padding
        bf16=autocast_bf16(cfg), fp16=False, use_cpu=not torch.cuda.is_available(),
    )
    class PrefixTrainer(Trainer):
        """Reads a batch's shared start once (`AnswerOnlyCollator.share_prefix`)."""

        def compute_loss(self, model, inputs, *args, **kwargs):
            prefix = inputs.pop("prefix_ids", None)
            if prefix is not None:
                inputs["cache"] = read_prefix(model, prefix, inputs["input_ids"].shape[0])
            return super().compute_loss(model, inputs, *args, **kwargs)

    lora = cfg.method == "lora"
    trainer = PrefixTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=AnswerOnlyCollator(tokenizer.pad_token_id, trim=lora,
                                         share_prefix=cfg.share_prefix if lora else 0),
        callbacks=[EarlyStoppingCallback(cfg.patience)] if has_val else None)
    resume = get_last_checkpoint(str(checkpoint_dir)) if cfg.resume and checkpoint_dir.exists() \
        else None
    if cfg.resume:
        logger.info("Resuming from %s", resume or "the start (no complete checkpoint found)")
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.monotonic() - started
    trained: Any = trainer.model
    trained.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    steps_done = output.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    epochs_done = steps_done / max(len(trainer.get_train_dataloader()) // cfg.grad_accum, 1)
    tokens = int(sum(len(e) for e in train_ds["input_ids"]) * min(epochs_done, cfg.epochs))
    return TrainResult(steps=output.global_step, train_tokens=tokens, seconds=seconds,
                       best_val_loss=trainer.state.best_metric, log_history=history)

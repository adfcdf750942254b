"""Train one adapter: LoRA or prompt tuning with transformers' Trainer, loss on the answer only.

Reads top to bottom: load the base model (and the adapter to continue from), wrap it for peft,
train with validation-based early stopping and checkpoints, save the best adapter into the
staging directory. The serving adapter is never touched here: the registry commits the staging
directory only after the run finished, and promotion is a separate, gated step.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.model import load_model
from tuning.config import TuneConfig

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


def load_for_training(base_path: Path, start_from: Path | None, cfg: TuneConfig):
    """(model, tokenizer): the base with the adapter to continue from, or a fresh adapter."""
    import torch
    from peft import PeftConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if start_from is not None:
        previous = PeftConfig.from_pretrained(str(start_from))
        same_method = (previous.peft_type.value == "LORA") == (cfg.method == "lora")
        if same_method:
            logger.info("Continuing from adapter %s", start_from.name)
            return load_model(base_path, start_from, trainable=True), tokenizer
        logger.info("Serving adapter is another method; starting a fresh %s adapter", cfg.method)
    return get_peft_model(load_model(base_path, trainable=True), _peft_config(cfg, tokenizer)), \
        tokenizer


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
    labels and logits cover the whole sequence."""

    def __init__(self, pad_token_id: int, trim: bool = True) -> None:
        self.pad = pad_token_id
        self.trim = trim

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        keep = max(sum(label != -100 for label in f["labels"]) for f in features) + 1
        keep = keep if self.trim else width
        ids, mask, labels = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append([self.pad] * pad + list(f["input_ids"]))
            mask.append([0] * pad + list(f["attention_mask"]))
            labels.append(([-100] * pad + list(f["labels"]))[-keep:])
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                 "labels": torch.tensor(labels)}
        return batch | ({"logits_to_keep": keep} if self.trim else {})


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
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), fp16=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=AnswerOnlyCollator(tokenizer.pad_token_id, trim=cfg.method == "lora"),
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

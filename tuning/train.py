"""Train one adapter: LoRA or prompt tuning with TRL's SFTTrainer, loss on the answer only.

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


def _peft_config(cfg: TuneConfig, tokenizer):  # type: ignore[no-untyped-def]
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if cfg.method == "prompt-tuning":
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text="Answer from the excerpts, cite them, or say you don't know.",
            tokenizer_name_or_path=tokenizer.name_or_path)
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=cfg.modules)


def load_for_training(base_path: Path, start_from: Path | None, cfg: TuneConfig):  # type: ignore[no-untyped-def]
    """(model, tokenizer): the base with the adapter to continue from, or a fresh adapter."""
    import torch
    from peft import PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if start_from is not None:
        previous = PeftConfig.from_pretrained(str(start_from))
        same_method = (previous.peft_type.value == "LORA") == (cfg.method == "lora")
        if same_method:
            logger.info("Continuing from adapter %s", start_from.name)
            return PeftModel.from_pretrained(model, str(start_from), is_trainable=True), tokenizer
        logger.info("Serving adapter is another method; starting a fresh %s adapter", cfg.method)
    return get_peft_model(model, _peft_config(cfg, tokenizer)), tokenizer


def count_tokens(tokenizer, rows: list[dict]) -> int:  # type: ignore[no-untyped-def]
    return sum(len(tokenizer(str(r["prompt"]) + str(r["completion"]),
                             add_special_tokens=False)["input_ids"]) for r in rows)


def train(model, tokenizer, train_rows: list[dict], val_rows: list[dict], cfg: TuneConfig,  # type: ignore[no-untyped-def]
          checkpoint_dir: Path, out_dir: Path) -> TrainResult:
    """Fine-tune `model` on prompt/completion rows; the best adapter is saved to `out_dir`."""
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    has_val = bool(val_rows)
    args = SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, max_length=cfg.max_length,
        completion_only_loss=True,  # loss on the assistant's answer, never on the prompt
        eval_strategy="steps" if has_val else "no", eval_steps=cfg.eval_every,
        save_strategy="steps", save_steps=cfg.eval_every, save_total_limit=2,
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss",
        greater_is_better=False, logging_steps=1, report_to=[], seed=cfg.seed,
        data_seed=cfg.seed, lr_scheduler_type="cosine", warmup_steps=0.1,  # 10% of steps
        dataloader_num_workers=0, save_only_model=False,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), fp16=False,
        gradient_checkpointing=False,  # a 135M model fits; recomputing would only cost time
    )
    to_ds = lambda rows: Dataset.from_list([{"prompt": str(r["prompt"]),  # noqa: E731
                                             "completion": str(r["completion"])} for r in rows])
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=to_ds(train_rows),
        eval_dataset=to_ds(val_rows) if has_val else None, processing_class=tokenizer,
        callbacks=[EarlyStoppingCallback(cfg.patience)] if has_val else None)
    resume = get_last_checkpoint(str(checkpoint_dir)) if cfg.resume and checkpoint_dir.exists() \
        else None
    if cfg.resume:
        logger.info("Resuming from %s", resume or "the start (no complete checkpoint found)")
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.monotonic() - started
    trainer.model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    steps_done = output.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    epochs_done = steps_done / max(len(trainer.get_train_dataloader()) // cfg.grad_accum, 1)
    tokens = int(count_tokens(tokenizer, train_rows) * min(epochs_done, cfg.epochs))
    return TrainResult(steps=output.global_step, train_tokens=tokens, seconds=seconds,
                       best_val_loss=trainer.state.best_metric, log_history=history)

"""The preference step: after SFT, move the adapter toward the answers users preferred.

SFT learns from 👍 answers and corrections only; a 👎 says what not to answer, and only a
preference objective can use it. TRL does the work:

* `dpo` (`DPOTrainer`): pairs of one prompt, an answer users preferred (a correction, or an
  answer rated 👍) against one they rejected (rated 👎). A correction and the answer it replaces
  are the clearest pair there is.
* `kto` (`KTOTrainer`): every rated answer on its own, desirable or not, pairs or no pairs.

With `--preference-sft-weight`, DPO's loss gains the chosen answers' own token loss (RPO), so
the step cannot make a preferred answer less likely while it widens the margin.

An answer's label is the sum of its votes (a correction counts as a 👍), so one adversarial
vote against an answer others liked does not make it "rejected". The reference model is the
adapter as SFT left it: TRL copies it as a frozen `ref` adapter and reads its log-probabilities
once before training, so the step moves the model only where the ratings disagree with it.
The copy is dropped before the adapter is saved. LoRA only; a prompt-tuning run skips it.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bot.storage.training import same_text
from tuning.config import TuneConfig
from tuning.train import autocast_bf16, train_top_layers

logger = logging.getLogger(__name__)

Row = dict[str, object]


@dataclass
class PreferenceResult:
    objective: str
    examples: int
    steps: int
    seconds: float
    log_history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """What the run records: size, time, and the first and last logged loss and margins."""
        logged = [h for h in self.log_history if "loss" in h]
        keys = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen_sum",
                "rewards/rejected_sum")
        pick = lambda h: {k: round(float(h[k]), 4) for k in keys if k in h}  # noqa: E731
        return {"objective": self.objective, "examples": self.examples, "steps": self.steps,
                "seconds": round(self.seconds, 1),
                "first": pick(logged[0]) if logged else {}, "last": pick(logged[-1]) if logged
                else {}}


def net_votes(rows: list[Row]) -> dict[str, dict[str, tuple[str, int]]]:
    """{prompt: {answer key: (answer, net votes)}}: 👍 and corrections +1, 👎 -1."""
    votes: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)
    for row in rows:
        prompt, answer = str(row["prompt"]), str(row["completion"])
        key = same_text(answer)
        _, net = votes[prompt].get(key, (answer, 0))
        votes[prompt][key] = (answer, net + (1 if row["label"] else -1))
    return votes


def preference_pairs(rows: list[Row]) -> list[Row]:
    """DPO rows `{prompt, chosen, rejected}`: within one prompt, every answer with more 👍 than
    👎 against every answer with more 👎 than 👍."""
    pairs: list[Row] = []
    for prompt, answers in net_votes(rows).items():
        chosen = [a for a, net in answers.values() if net > 0]
        rejected = [a for a, net in answers.values() if net < 0]
        pairs += [{"prompt": prompt, "chosen": c, "rejected": r} for c in chosen for r in rejected]
    return pairs


def preference_rows(rows: list[Row]) -> list[Row]:
    """KTO rows `{prompt, completion, label}`, one per answer, labelled by its net vote (a tie
    says nothing and is left out)."""
    return [{"prompt": prompt, "completion": answer, "label": net > 0}
            for prompt, answers in net_votes(rows).items()
            for answer, net in answers.values() if net != 0]


def examples_for(objective: str, rows: list[Row], limit: int, seed: int) -> list[Row]:
    """The rows the objective trains on, at most `limit` (a seeded sample; 0: all); none when
    they cannot teach a preference (KTO needs both kinds)."""
    out = preference_pairs(rows) if objective == "dpo" else preference_rows(rows)
    if objective == "kto" and len({r["label"] for r in out}) < 2:
        return []
    if limit and len(out) > limit:
        out = random.Random(seed).sample(out, limit)
    return out


def train_preference(model, tokenizer, rows: list[Row], cfg: TuneConfig,
                     checkpoint_dir: Path) -> PreferenceResult | None:
    """Run `cfg.preference` on the rated rows `rows` ({prompt, completion, label}) in place on
    `model` (a peft model, trained already); None when there is nothing to learn from."""
    if cfg.preference == "off" or cfg.method != "lora":
        return None
    examples = examples_for(cfg.preference, rows, cfg.preference_max_examples, cfg.seed)
    if not examples:
        logger.info("Preference step skipped: no %s examples in tonight's ratings",
                    cfg.preference)
        return None
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    config_class, trainer_class = (DPOConfig, DPOTrainer) if cfg.preference == "dpo" \
        else (KTOConfig, KTOTrainer)
    # One pair per pass (KTO needs two rows to estimate its KL term), gradients summed up to
    # --batch-size: TRL's fused LM head on CPU held 8.9 GB at four 700-token pairs a pass,
    # 3.4 GB at one, for the same time per pair.
    per_pass = 2 if cfg.preference == "kto" else 1
    losses: dict = {}
    if cfg.preference == "dpo" and cfg.preference_sft_weight > 0:
        losses = {"loss_type": ["sigmoid", "sft"],
                  "loss_weights": [1.0, cfg.preference_sft_weight]}
    args = config_class(
        output_dir=str(checkpoint_dir), per_device_train_batch_size=per_pass,
        gradient_accumulation_steps=max(cfg.batch_size // per_pass, 1),
        learning_rate=cfg.preference_learning_rate, num_train_epochs=cfg.preference_epochs,
        lr_scheduler_type="cosine", beta=cfg.preference_beta, max_length=cfg.max_length,
        precompute_ref_log_probs=True, activation_checkpointing=False, save_strategy="no",
        logging_steps=1, report_to=[], seed=cfg.seed, dataloader_num_workers=0,
        dataloader_pin_memory=False, bf16=autocast_bf16(cfg),
        use_cpu=not torch.cuda.is_available(), **losses)

    class TopLayers(trainer_class):  # type: ignore[misc, valid-type]
        """TRL adds the `ref` copy and switches to it to read the reference, which marks every
        layer's adapter trainable again; the optimizer takes the top layers only, as SFT."""

        def create_optimizer(self, *args, **kwargs):
            train_top_layers(self.model, cfg.train_layers)
            return super().create_optimizer(*args, **kwargs)

    started = time.monotonic()
    trainer = TopLayers(model=model, args=args, train_dataset=Dataset.from_list(examples),
                        processing_class=tokenizer)
    output = trainer.train()
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    return PreferenceResult(cfg.preference, len(examples), output.global_step,
                            time.monotonic() - started, trainer.state.log_history)

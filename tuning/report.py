"""Each run's report: loss curves as a PNG, metrics as JSON, the gate's decision with reasons."""

from __future__ import annotations

import json
from pathlib import Path

from tuning.gate import Decision


def write_report(directory: Path, log_history: list[dict], metrics: dict,
                 decision: Decision) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("promoted" if decision.promote else "rejected by the gate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "loss.png")
    plt.close(fig)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (directory / "decision.txt").write_text(
        ("PROMOTED" if decision.promote else "REJECTED") + "\n" +
        "\n".join(f"- {r}" for r in decision.reasons) + "\n")
    return directory

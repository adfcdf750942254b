"""The promotion gate: a candidate adapter replaces the serving one only if it is better.

Rules, all required:
1. on the frozen golden set it is not worse than the serving adapter by more than `margin`
   (pass rate may drop at most `margin`; answer loss may rise at most `margin` × serving loss);
2. on held-out recent ratings it is better: it improves preference accuracy (👍 over 👎) or
   the loss on held-out 👍 answers and corrections, and makes neither worse;
3. its answers to held-out prompts stay grounded in those prompts: the grounded rate may drop
   at most `grounding_margin`. Rule 2 alone can be fooled by poisoned ratings (attackers' 👍
   and corrections also land in the held-out split); this rule catches what they plant,
   because a planted answer is not in the excerpts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuning.evaluate import Metrics


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(candidate: Metrics, serving: Metrics, margin: float,
           grounding_margin: float = 0.1) -> Decision:
    reasons: list[str] = []
    ok = True
    if candidate.golden_pass < serving.golden_pass - margin:
        ok = False
        reasons.append(f"golden pass rate fell {serving.golden_pass:.2f} → "
                       f"{candidate.golden_pass:.2f} (allowed drop {margin:.2f})")
    else:
        reasons.append(f"golden pass rate {serving.golden_pass:.2f} → {candidate.golden_pass:.2f}")
    if candidate.golden_loss > serving.golden_loss * (1 + margin):
        ok = False
        reasons.append(f"golden loss rose {serving.golden_loss:.3f} → {candidate.golden_loss:.3f}"
                       f" (allowed {margin:.0%})")
    else:
        reasons.append(f"golden loss {serving.golden_loss:.3f} → {candidate.golden_loss:.3f}")
    improved, worse = [], []
    if candidate.preference_accuracy is not None and serving.preference_accuracy is not None:
        c, v = candidate.preference_accuracy, serving.preference_accuracy
        (improved if c > v else worse if c < v else []).append("preference accuracy")
        reasons.append(f"held-out preference accuracy {v:.2f} → {c:.2f}")
    if candidate.heldout_loss is not None and serving.heldout_loss is not None:
        c, v = candidate.heldout_loss, serving.heldout_loss
        (improved if c < v else worse).append("answer loss")
        reasons.append(f"held-out answer loss {v:.3f} → {c:.3f}")
    better = bool(improved) and not worse
    if worse:
        reasons.append("worse on held-out ratings: " + ", ".join(worse))
    elif not improved:
        reasons.append("no held-out ratings show the candidate is better")
    if candidate.grounded is not None and serving.grounded is not None:
        if candidate.grounded < serving.grounded - grounding_margin:
            ok = False
            reasons.append(f"grounded answers fell {serving.grounded:.2f} → "
                           f"{candidate.grounded:.2f} (allowed drop {grounding_margin:.2f})")
        else:
            reasons.append(f"grounded answers {serving.grounded:.2f} → {candidate.grounded:.2f}")
    return Decision(promote=ok and better, reasons=reasons)

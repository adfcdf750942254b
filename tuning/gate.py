"""The promotion gate: a candidate adapter replaces the serving one only if it is better.

Rules, all required:
1. on the frozen golden set it is not worse than the serving adapter by more than `margin`
   (pass rate may drop at most `margin`; answer loss may rise at most `margin` × serving loss);
2. on held-out recent ratings it is better: higher preference accuracy (👍 over 👎) when there
   are 👍/👎 pairs, otherwise a lower loss on held-out 👍 answers and corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuning.evaluate import Metrics


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(candidate: Metrics, serving: Metrics, margin: float) -> Decision:
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
    if candidate.preference_accuracy is not None and serving.preference_accuracy is not None:
        better = candidate.preference_accuracy > serving.preference_accuracy
        reasons.append(f"held-out preference accuracy {serving.preference_accuracy:.2f} → "
                       f"{candidate.preference_accuracy:.2f}" + ("" if better else " (not better)"))
    elif candidate.heldout_loss is not None and serving.heldout_loss is not None:
        better = candidate.heldout_loss < serving.heldout_loss
        reasons.append(f"held-out answer loss {serving.heldout_loss:.3f} → "
                       f"{candidate.heldout_loss:.3f}" + ("" if better else " (not better)"))
    else:
        better = False
        reasons.append("no held-out ratings to show the candidate is better")
    return Decision(promote=ok and better, reasons=reasons)

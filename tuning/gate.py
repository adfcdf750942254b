"""The promotion gate: a candidate adapter replaces the serving one only if it is better.

Rules, all required:
1. on the frozen golden set it is not worse than the serving adapter by more than `margin`
   (pass rate may drop at most `margin`; answer loss may rise at most `margin` × serving loss);
2. on held-out recent ratings it is better: it improves preference accuracy (👍 over 👎) or
   the loss on held-out 👍 answers and corrections, and makes neither worse;
3. its answers to held-out prompts stay grounded in those prompts: the grounded rate may drop
   at most `grounding_margin`;
4. it has not learned content its excerpts do not support: on held-out preferred answers that
   neither their own prompt nor the knowledge base support, its loss on what they claim that
   the prompt lacks (`claim_loss`) may fall at most `unsupported_margin` (relative) below the
   serving adapter's;
5. its held-out answers are not less accurate (they give the facts users rated good or wrote
   as corrections) by more than `accuracy_margin`; a rise in accuracy also counts as being
   better for rule 2.

Rule 2 alone can be fooled by poisoned ratings: attackers' 👍 and corrections also land in the
held-out split. Rules 3 and 4 catch what they plant, because a planted answer is not in the
excerpts: rule 3 once the candidate says it, rule 4 as soon as it has become more likely, which
happens long before. Learning from ratings should change how the assistant answers (shorter,
citing, admitting gaps); what it knows belongs in the knowledge base, where admins curate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuning.evaluate import Metrics


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    # rule 4 failed: the night's data taught what neither the excerpts nor the knowledge base
    # hold, so no candidate trained on it may serve (see `tuning.nightly`)
    learned_unsupported: bool = False


def _at_most_drop(name: str, candidate: float, serving: float, allowed: float,
                  reasons: list[str]) -> bool:
    """A rate may fall by at most `allowed`; records the comparison either way."""
    if candidate < serving - allowed:
        reasons.append(f"{name} fell {serving:.2f} → {candidate:.2f} (allowed drop {allowed:.2f})")
        return False
    reasons.append(f"{name} {serving:.2f} → {candidate:.2f}")
    return True


def decide(candidate: Metrics, serving: Metrics, margin: float,
           grounding_margin: float = 0.1, unsupported_margin: float = 0.1,
           accuracy_margin: float = 0.05) -> Decision:
    reasons: list[str] = []
    learned_unsupported = False
    ok = _at_most_drop("golden pass rate", candidate.golden_pass, serving.golden_pass, margin,
                       reasons)
    if candidate.golden_loss > serving.golden_loss * (1 + margin):
        ok = False
        reasons.append(f"golden loss rose {serving.golden_loss:.3f} → {candidate.golden_loss:.3f}"
                       f" (allowed {margin:.0%})")
    else:
        reasons.append(f"golden loss {serving.golden_loss:.3f} → {candidate.golden_loss:.3f}")
    improved: list[str] = []
    worse: list[str] = []
    if candidate.preference_accuracy is not None and serving.preference_accuracy is not None:
        c, v = candidate.preference_accuracy, serving.preference_accuracy
        (improved if c > v else worse if c < v else []).append("preference accuracy")
        reasons.append(f"held-out preference accuracy {v:.2f} → {c:.2f}")
    if candidate.heldout_loss is not None and serving.heldout_loss is not None:
        c, v = candidate.heldout_loss, serving.heldout_loss
        (improved if c < v else worse).append("answer loss")
        reasons.append(f"held-out answer loss {v:.3f} → {c:.3f}")
    accuracy_ok = True
    if candidate.answer_accuracy is not None and serving.answer_accuracy is not None:
        c, v = candidate.answer_accuracy, serving.answer_accuracy
        if c > v:
            improved.append("answer accuracy")
        accuracy_ok = _at_most_drop("held-out answer accuracy", c, v, accuracy_margin, reasons)
    better = bool(improved) and not worse
    if worse:
        reasons.append("worse on held-out ratings: " + ", ".join(worse))
    elif not improved:
        reasons.append("no held-out ratings show the candidate is better")
    if candidate.grounded is not None and serving.grounded is not None:
        ok = _at_most_drop("grounded answers", candidate.grounded, serving.grounded,
                           grounding_margin, reasons) and ok
    if candidate.unsupported_loss is not None and serving.unsupported_loss is not None:
        c, v = candidate.unsupported_loss, serving.unsupported_loss
        if c < v * (1 - unsupported_margin):
            ok, learned_unsupported = False, True
            reasons.append(f"learned answers their excerpts do not support: loss {v:.3f} → "
                           f"{c:.3f} (allowed fall {unsupported_margin:.0%})")
        else:
            reasons.append(f"loss on unsupported held-out answers {v:.3f} → {c:.3f}")
    return Decision(promote=ok and better and accuracy_ok, reasons=reasons,
                    learned_unsupported=learned_unsupported)

from tuning.evaluate import Metrics
from tuning.gate import decide

SERVING = Metrics(golden_loss=2.0, golden_pass=0.75, heldout_loss=1.5, preference_accuracy=0.5)


def test_better_on_heldout_and_not_worse_on_golden_is_promoted() -> None:
    candidate = Metrics(golden_loss=2.05, golden_pass=0.75, heldout_loss=1.2,
                        preference_accuracy=0.7)
    decision = decide(candidate, SERVING, margin=0.05)
    assert decision.promote
    assert "held-out preference accuracy 0.50 → 0.70" in decision.reasons[-1]


def test_worse_on_golden_is_rejected_even_if_better_on_heldout() -> None:
    candidate = Metrics(golden_loss=2.0, golden_pass=0.5, heldout_loss=1.0,
                        preference_accuracy=0.9)
    decision = decide(candidate, SERVING, margin=0.05)
    assert not decision.promote and "golden pass rate fell" in decision.reasons[0]
    candidate = Metrics(golden_loss=2.5, golden_pass=0.75, heldout_loss=1.0,
                        preference_accuracy=0.9)
    assert not decide(candidate, SERVING, margin=0.05).promote


def test_not_better_on_heldout_is_rejected() -> None:
    same = Metrics(golden_loss=2.0, golden_pass=0.75, heldout_loss=1.4, preference_accuracy=0.5)
    assert not decide(same, SERVING, margin=0.05).promote


def test_without_preference_pairs_heldout_loss_decides() -> None:
    serving = Metrics(2.0, 0.75, heldout_loss=1.5, preference_accuracy=None)
    assert decide(Metrics(2.0, 0.75, 1.4, None), serving, 0.05).promote
    assert not decide(Metrics(2.0, 0.75, 1.6, None), serving, 0.05).promote
    assert not decide(Metrics(2.0, 0.75, None, None), Metrics(2.0, 0.75, None, None), 0.05).promote

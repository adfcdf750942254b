"""What admins do with what users said was wrong (`/feedback`).

Each 👎 answer is triaged by its correction: did the model misread excerpts that held the right
answer, did retrieval miss a part of the knowledge base that holds it, or is it in the knowledge
base at all? The first is training's job; the other two are knowledge work, and a correction can
become a knowledge-base entry with one button, so it helps the same day instead of after a
night's training. Corrections the nightly screen held back (`tuning.dataset`) wait here for an
admin to add them to the knowledge base, let them train, or reject them. Every decision is
audited and can be undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.prompting import excerpts_in
from bot.services.grounding import supported
from bot.services.knowledge import AddResult, KnowledgeService
from bot.storage.reporting import Complaint, HeldCorrection, ReportStore
from bot.storage.store import Store
from bot.storage.training import APPROVED, HELD, REJECTED


class Cause(StrEnum):
    """Why an answer got a 👎, judged by the correction that came with it."""

    MISREAD = "misread"      # the excerpts the model was given hold the correction
    RETRIEVAL = "retrieval"  # the knowledge base holds it; the excerpts did not
    MISSING = "missing"      # nothing in the knowledge base backs it
    UNKNOWN = "unknown"      # no correction to judge by

    @property
    def explained(self) -> str:
        return {
            Cause.MISREAD: "the model misread good evidence (its excerpts hold the correction)",
            Cause.RETRIEVAL: "retrieval missed it (the knowledge base holds the correction, the "
                             "excerpts did not)",
            Cause.MISSING: "not in the knowledge base (add the correction, or leave it out)",
            Cause.UNKNOWN: "no correction to judge by",
        }[self]


def triage(correction: str, question: str, prompt: str, found: list[str]) -> Cause:
    """The cause, from the correction, the question and the prompt the answer came from, and
    the knowledge-base passages a search for the question and the correction `found`."""
    if not correction.strip():
        return Cause.UNKNOWN
    if supported(correction, excerpts_in(prompt), given=question):
        return Cause.MISREAD
    if supported(correction, found, given=question):
        return Cause.RETRIEVAL
    return Cause.MISSING


@dataclass(frozen=True)
class Triaged:
    complaint: Complaint
    cause: Cause


class ReviewService:
    def __init__(self, store: Store, reports: ReportStore, knowledge: KnowledgeService) -> None:
        self.store = store
        self.reports = reports
        self.knowledge = knowledge

    def _found(self, question: str, correction: str) -> list[str]:
        hits = self.knowledge.search(f"{question}\n{correction}", 5)
        return [f"{h.title}\n{h.text}" for h in hits]

    def cause(self, question: str, prompt: str, correction: str) -> Cause:
        found = self._found(question, correction) if correction.strip() else []
        return triage(correction, question, prompt, found)

    def backed(self, question: str, prompt: str, correction: str) -> bool:
        """Whether the knowledge base (the answer's excerpts, or a new search) backs a
        correction: the nightly screen trains only on those."""
        return self.cause(question, prompt, correction) is not Cause.MISSING

    def complaints(self, limit: int = 5) -> list[Triaged]:
        """The most recently 👎'd answers, newest first, each with its likely cause."""
        return [Triaged(c, self.cause(c.question, c.prompt, c.corrections[-1] if c.corrections
                                      else ""))
                for c in self.reports.downvoted(limit)]

    def held(self, limit: int = 10) -> tuple[int, list[HeldCorrection]]:
        return self.reports.held(limit)

    def to_knowledge(self, correction_id: int, actor: str, admin_id: int | None = None
                     ) -> AddResult | None:
        """Add a correction to the knowledge base (titled by its question) and let it train;
        None if there is no such correction."""
        found = self.store.correction(correction_id)
        if found is None:
            return None
        question, text, _ = found
        title = " ".join(question.split())[:120] or f"Correction #{correction_id}"
        result = self.knowledge.add_text(title, text, f"correction:{correction_id}", actor,
                                         admin_id)
        self.store.review_correction(correction_id, APPROVED, actor,
                                     {"document_id": result.document.id})
        return result

    def undo_knowledge(self, correction_id: int, document_id: int, actor: str) -> bool:
        """Take back `to_knowledge`: remove the entry and hold the correction again."""
        removed = self.knowledge.remove(document_id, actor)
        held = self.store.review_correction(correction_id, HELD + "unsupported", actor,
                                            {"document_id": document_id, "undo": True})
        return removed is not None or held

    def decide(self, correction_id: int, approve: bool, actor: str) -> bool:
        """Let a held correction train, or keep it out for good; False if there is none."""
        return self.store.review_correction(correction_id, APPROVED if approve else REJECTED,
                                            actor)

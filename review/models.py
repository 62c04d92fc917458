"""The review queue: live replies of a prompt that a person should look at (a low online score, a
thumbs down, picked by hand, a random sample for calibration), and what reviewers said of them.
A correction becomes a failure case (source `production`), the loop's second step again."""

import random

from django.conf import settings
from django.db import models
from django.db.models import Q


class ReviewItem(models.Model):
    class Reason(models.TextChoices):
        LOW_SCORE = "low_score", "low score"  # an online evaluation rule scored it below its threshold
        THUMBS_DOWN = "thumbs_down", "thumbs down"
        PICKED = "picked", "picked"  # sent to review by hand
        CALIBRATION = "calibration", "calibration"  # a random sample of the prompt's replies

    class Status(models.TextChoices):
        OPEN = "open", "open"
        CORRECTED = "corrected", "corrected"  # a reviewer wrote the expected answer: a failure case
        FINE = "fine", "fine"
        SKIPPED = "skipped", "skipped"

    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="review_items")
    prompt = models.ForeignKey("prompts.Prompt", on_delete=models.CASCADE, related_name="review_items")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    # The online scores of the reply, scorer → value, merged from every rule that scored it.
    scores = models.JSONField(default=dict, blank=True)
    # What the online judge concluded: True below its rule's threshold, False above; None not scored.
    # Compared with the reviewers' verdicts (the judge's agreement on the queue's page).
    judge_below = models.BooleanField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # Reviews it takes: 2 for a share REVIEW_OVERLAP of the items (their reviewers' agreement is
    # measured), 1 for the others. Chosen once, when it lands, from its id.
    needs = models.PositiveSmallIntegerField(default=1)
    reviewed = models.PositiveSmallIntegerField(default=0)  # reviews counted so far
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # One open item per reply: a thumbs down on a reply the judge already sent adds nothing to
            # review (its scores join the open item instead).
            models.UniqueConstraint(
                fields=["message"], condition=Q(status="open"), name="one_open_review_item_per_reply"
            )
        ]
        indexes = [models.Index(fields=["prompt", "status", "id"])]

    def __str__(self):
        return f"review item #{self.pk}"

    WHY = {
        Reason.LOW_SCORE: "An online evaluation rule scored it below its threshold.",
        Reason.THUMBS_DOWN: "Its reader gave it a thumbs down.",
        Reason.PICKED: "Someone sent it to review.",
        Reason.CALIBRATION: "A random sample of the prompt's replies, to calibrate the reviewers and the judge.",
    }

    @property
    def why(self) -> str:
        return self.WHY[self.reason]

    @staticmethod
    def needs_for(item_id: int, overlap: float) -> int:
        """2 for a share `overlap` of the items, seeded by the item's id (the same item always draws the same)."""
        return 2 if random.Random(item_id).random() < overlap else 1


class Review(models.Model):
    class Verdict(models.TextChoices):
        EXPECTED = "expected", "corrected"  # the reviewer wrote the answer expected: `case`
        FINE = "fine", "fine"
        SKIP = "skip", "skipped"

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    expected = models.TextField(blank=True)
    case = models.ForeignKey("evals.FailureCase", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["item", "reviewer"], name="one_review_per_reviewer")]

    def __str__(self):
        return f"{self.verdict} of item #{self.item_id} by {self.reviewer_id}"

"""What the queue follows: thumbs on replies (chat's signals) and online scores (online's). Each
receiver is a few queries, runs after the change committed, and never raises into its sender: a
failure is logged and the reply goes on without its item."""

import logging

from . import services

log = logging.getLogger("review")


def on_feedback_changed(sender, message_id, feedback, previous, **kwargs):
    try:
        if feedback == "down":
            services.item_add(message_id=message_id, reason=services.ReviewItem.Reason.THUMBS_DOWN)
        elif previous == "down":
            services.thumbs_down_withdrawn(message_id=message_id)
    except Exception:
        log.exception("reply %s: its thumbs (%r) did not reach the review queue", message_id, feedback)


def on_reply_scored(sender, message_id, rule_id, scores, below_threshold, **kwargs):
    try:
        services.reply_scored(message_id=message_id, scores=dict(scores or {}), below_threshold=bool(below_threshold))
    except Exception:
        log.exception("reply %s: the scores of online rule %s did not reach the review queue", message_id, rule_id)

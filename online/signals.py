"""What online evaluation tells the apps above it (the review queue listens: a reply scored below
its rule's `review_below` lands in the queue). Sent by the job worker once a sampled reply is
scored, after its scores are stored."""

from django.dispatch import Signal

# A sampled reply was scored: `scores` {scorer name: value 0-1, or None for a scorer error},
# `below_threshold` True when a value is below the rule's review_below.
reply_scored = Signal()  # message_id, rule_id, scores, below_threshold

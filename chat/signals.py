"""What happens to replies, for the apps above chat that follow them (monitoring's rollups, online
evaluation, the review queue): chat cannot import them, they connect here. Each is sent after the
transaction that made the change commits, with `message_id` (the assistant reply)."""

from django.dispatch import Signal

# A reply ended: complete, stopped or failed (by its worker, or by the sweeper). Sent once per reply.
reply_finished = Signal()  # message_id
# A person set or cleared the thumbs of a reply: feedback "up", "down" or "" (cleared), and the
# feedback it had before ("" for none).
feedback_changed = Signal()  # message_id, feedback, previous
# A reply was flagged as a failure case (evals).
reply_flagged = Signal()  # message_id

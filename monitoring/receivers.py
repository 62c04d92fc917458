"""chat's reply signals, followed into the rollups. A receiver runs in whoever changed the reply
(a model worker, the web process), after its transaction committed: it never raises into chat (a
missed count is logged; the reply's next event, or its online score, counts it then)."""

import logging

from chat.signals import feedback_changed, reply_finished, reply_flagged

from .services import reply_rollup_sync

log = logging.getLogger("monitoring")


def follow_reply(sender, message_id, **kwargs):
    try:
        reply_rollup_sync(message_id=message_id)
    except Exception:
        log.exception("could not count reply %s in its rollup", message_id)


def connect():
    for signal in (reply_finished, feedback_changed, reply_flagged):
        signal.connect(follow_reply, dispatch_uid=f"monitoring.follow_reply.{id(signal)}")

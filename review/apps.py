from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: the receivers import models.
        # Replies land in the queue from below: chat and online cannot import review, review listens.
        from chat.signals import feedback_changed  # noqa: PLC0415
        from online.signals import reply_scored  # noqa: PLC0415

        from . import receivers  # noqa: PLC0415

        feedback_changed.connect(receivers.on_feedback_changed, dispatch_uid="review.feedback_changed")
        reply_scored.connect(receivers.on_reply_scored, dispatch_uid="review.reply_scored")

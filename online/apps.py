from django.apps import AppConfig

from studio import sweeping


class OnlineConfig(AppConfig):
    name = "online"
    verbose_name = "Online evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: sampling imports models
        from chat.signals import reply_finished  # noqa: PLC0415

        from .sampling import on_reply_finished, samples_sweep  # noqa: PLC0415

        reply_finished.connect(on_reply_finished, dispatch_uid="online.sample_reply")
        sweeping.register(samples_sweep)  # samples the job queue never got, or whose job worker died

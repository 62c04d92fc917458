from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Production monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: the receivers import models
        from . import comparison, receivers  # noqa: PLC0415, F401 (comparison registers itself with prompts.splits)

        receivers.connect()

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from studio import sweeping

        from .services import replies_sweep

        sweeping.register(replies_sweep)  # replies whose model worker died or never came

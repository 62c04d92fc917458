from django.apps import AppConfig
from django.db.models.signals import post_migrate

from studio import chat_activity, sweeping

from .search_index import ensure_installed


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: these import models
        from knowledge import expansion  # noqa: PLC0415

        from .serving.expansion import ask_for_rewrites  # noqa: PLC0415
        from .serving.queue import people_waiting_for_replies, replies_sweep  # noqa: PLC0415

        expansion.register(ask_for_rewrites)  # knowledge search asks the served model for rewrites

        sweeping.register(replies_sweep)  # replies whose model worker died or never came
        chat_activity.register(people_waiting_for_replies)  # knowledge ingestion yields the CPU to them
        # A migration that rebuilds a chat table on SQLite drops its search triggers: put them back.
        post_migrate.connect(ensure_installed, sender=self, dispatch_uid="chat.search_index.ensure_installed")

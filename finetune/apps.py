from django.apps import AppConfig


class FinetuneConfig(AppConfig):
    name = "finetune"
    verbose_name = "Fine-tuning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from studio import sweeping

        from .services import jobs_sweep

        sweeping.register(jobs_sweep)  # fine-tunes whose job worker died or never got them

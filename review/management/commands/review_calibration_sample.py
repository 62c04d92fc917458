"""`manage.py review_calibration_sample`: add a random sample of each prompt's recent finished
replies to its review queue (reason `calibration`), so reviewers and the online judge are also
measured on replies nothing flagged. Run it from cron (daily, say); the queue's page has the same
for one prompt ("Add N random replies to calibrate")."""

from django.core.management.base import BaseCommand, CommandError

from prompts.models import Prompt
from review import services


class Command(BaseCommand):
    help = "Add N random recent replies per prompt to the review queue (calibration)."

    def add_arguments(self, parser):
        parser.add_argument("--per-prompt", type=int, default=5, help="replies per prompt (1-100; default 5)")
        parser.add_argument("--days", type=int, default=7, help="from the last this many days (default 7)")
        parser.add_argument("--prompt", default="", help="one prompt's slug (default: every prompt)")
        parser.add_argument("--seed", type=int, default=None, help="the random choice's seed (default: none)")

    def handle(self, *args, per_prompt, days, prompt, seed, **options):
        if not 1 <= per_prompt <= services.MAX_CALIBRATION_SAMPLE:
            raise CommandError(f"--per-prompt: from 1 to {services.MAX_CALIBRATION_SAMPLE}")
        if days < 1:
            raise CommandError("--days: at least 1")
        prompts = Prompt.objects.filter(slug=prompt) if prompt else Prompt.objects.all()
        if prompt and not prompts.exists():
            raise CommandError(f"there is no prompt “{prompt}”")
        total = 0
        for each in prompts.order_by("pk").iterator():
            added = services.calibration_sample(prompt=each, count=per_prompt, days=days, seed=seed)
            total += len(added)
            if added:
                self.stdout.write(f"{each.slug}: {len(added)} repl{'y' if len(added) == 1 else 'ies'} added")
        self.stdout.write(f"{total} repl{'y' if total == 1 else 'ies'} added to review queues")

import hashlib

from django.conf import settings
from django.db import models


def token_digest(raw_token: str) -> str:
    # Tokens are long random strings, so a fast unsalted hash is enough (GitHub does the same).
    return hashlib.sha256(raw_token.encode()).hexdigest()


class ApiToken(models.Model):
    """A user's key for the HTTP API. Only its hash is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)  # the token's start, so a person can tell tokens apart
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class PeopleChange(models.Model):
    """One change to the team, kept for good: who did what to whom, and when (Settings → People
    shows the last ones). Append-only: accounts.services adds a row for every change it makes,
    and nothing edits or deletes one. Names are copied: a removed person's rows keep them."""

    class Action(models.TextChoices):
        ADDED = "added", "added"
        MADE_STAFF = "made_staff", "made staff"
        STAFF_TAKEN = "staff_taken", "took staff away from"
        PASSWORD_SET = "password_set", "set a new first password for"
        DEACTIVATED = "deactivated", "deactivated"
        REACTIVATED = "reactivated", "reactivated"
        REMOVED = "removed", "removed"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    actor_name = models.CharField(max_length=150)
    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    person_name = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    detail = models.CharField(max_length=300, blank=True)  # what went with it ("revoked 2 API tokens")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.actor_name} {self.get_action_display()} {self.person_name}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("A change to the team is recorded once and never edited.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("A change to the team is never deleted.")

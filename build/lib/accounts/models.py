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

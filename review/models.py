"""review: models (see its services)."""

from django.db import models  # noqa: F401

from django.apps import AppConfig
from django.urls import register_converter


class DatabaseIdConverter:
    """`<id:name>` in URLs: a row id that fits the database's 64-bit integers. Django's `<int:>`
    takes any number of digits, and a 30-digit id made SQLite and PostgreSQL answer 500."""

    regex = "[0-9]{1,18}"

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(value)


class StudioConfig(AppConfig):
    name = "studio"

    def ready(self):
        register_converter(DatabaseIdConverter, "id")

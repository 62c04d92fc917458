from django.contrib import admin

from .models import ApiToken, PeopleChange


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("user",)
    readonly_fields = ("user", "name", "prefix", "digest", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are made by their owner on the settings page, shown once


@admin.register(PeopleChange)
class PeopleChangeAdmin(admin.ModelAdmin):
    """Read only: the record of changes to the team is append-only (accounts.services writes it)."""

    list_display = ("at", "actor_name", "action", "person_name", "detail")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

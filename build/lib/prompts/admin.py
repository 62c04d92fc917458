from django.contrib import admin

from .models import LabelMove, Prompt, PromptLabel, PromptVersion


class PromptVersionInline(admin.TabularInline):
    model = PromptVersion
    extra = 0
    can_delete = False
    fields = ("number", "commit_message", "author", "created_at")
    readonly_fields = fields  # versions are immutable

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "owner", "created_at")
    list_select_related = ("owner",)
    search_fields = ("name", "slug")
    filter_horizontal = ("editors",)
    inlines = [PromptVersionInline]

    def has_add_permission(self, request):
        # A prompt is created with its first version, on /prompts/new/; a prompt without one
        # would have no page to show.
        return False


@admin.register(LabelMove)
class LabelMoveAdmin(admin.ModelAdmin):
    """View only: the label history is an audit trail (moves are recorded by the prompt page)."""

    list_display = ("prompt", "label", "from_number", "to_number", "moved_by", "moved_at", "provenance")
    list_select_related = ("prompt", "moved_by")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PromptLabel)
class PromptLabelAdmin(admin.ModelAdmin):
    """Read-only here: labels move through the prompt page, which records who moved them."""

    list_display = ("prompt", "name", "version", "updated_at")
    list_select_related = ("prompt", "version")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

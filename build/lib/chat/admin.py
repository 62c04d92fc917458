from django.contrib import admin

from .models import Conversation, Message, ModelWorker


class MessageInline(admin.TabularInline):
    """Read-only: messages are written by their author and the model worker, never by hand."""

    model = Message
    extra = 0
    fields = ("role", "status", "content", "model_name", "tokens_per_s")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("title", "owner__username")
    inlines = [MessageInline]


@admin.register(ModelWorker)
class ModelWorkerAdmin(admin.ModelAdmin):
    """View only: workers announce themselves; a row edited by hand would show a model nobody serves."""

    list_display = ("hostname", "pid", "state", "description", "last_seen_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

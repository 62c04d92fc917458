from django.contrib import admin

from .models import Conversation, Message, ModelWorker


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "status", "content", "model_name", "tokens_per_s")
    readonly_fields = fields


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("title", "owner__username")
    inlines = [MessageInline]


@admin.register(ModelWorker)
class ModelWorkerAdmin(admin.ModelAdmin):
    list_display = ("hostname", "pid", "state", "description", "last_seen_at")

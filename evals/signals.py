"""Privacy: deleting a conversation deletes the private failure cases flagged from it (they hold
copies of its messages and only their author could see them). Shared cases are team data:
they keep their copy, and only lose their link back to the conversation."""

from django.db.models.signals import pre_delete
from django.dispatch import receiver

from chat.models import Conversation

from .models import FailureCase


@receiver(pre_delete, sender=Conversation)
def delete_private_cases_of_conversation(sender, instance, **kwargs):
    FailureCase.objects.filter(source_conversation=instance, shared=False).delete()

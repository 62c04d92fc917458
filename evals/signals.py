"""Privacy: deleting a conversation deletes the private failure cases flagged from it (they hold
copies of its messages and only their author could see them). Shared cases are team data:
they keep their copy, and only lose their link back to the conversation. A saved case of a prompt
has its input embedded in the background (examples chosen per input: evals/nearest_examples.py)."""

from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from chat.models import Conversation

from .models import FailureCase
from .nearest_examples import embedding_wanted


@receiver(pre_delete, sender=Conversation)
def delete_private_cases_of_conversation(sender, instance, **kwargs):
    FailureCase.objects.filter(source_conversation=instance, shared=False).delete()


@receiver(post_save, sender=FailureCase)
def embed_saved_case(sender, instance, raw=False, **kwargs):
    """A case may be an example chosen per input: its input is embedded in the background."""
    if not raw and instance.prompt_version_id is not None:
        embedding_wanted(instance.pk)

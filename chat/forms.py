"""Forms of the chat pages."""

from django import forms


class SearchForm(forms.Form):
    """GET /chat/search/. The query is taken as typed, however long (chat.search bounds it); a bad
    date is an error beside its field and the search runs without it."""

    q = forms.CharField(required=False, strip=True, label="Search")
    model = forms.CharField(required=False, max_length=200)
    prompt = forms.CharField(required=False, max_length=100, label="Prompt (slug)")
    since = forms.DateField(required=False, label="From")
    until = forms.DateField(required=False, label="To")
    flagged = forms.BooleanField(required=False, label="Only with a flagged reply")

    def search_arguments(self) -> dict:
        """The arguments of chat.search.conversations_search: the valid fields, bad ones left out."""
        self.is_valid()
        cleaned = self.cleaned_data
        return {
            "query": cleaned.get("q") or "",
            "model": cleaned.get("model") or None,
            "prompt": cleaned.get("prompt") or None,
            "since": cleaned.get("since"),
            "until": cleaned.get("until"),
            "flagged": True if cleaned.get("flagged") else None,
        }

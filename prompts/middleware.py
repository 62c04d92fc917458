"""Renders of a request are counted against the person who sent it (prompts.rendering.render_owner)."""

from .rendering import render_owner


def renders_per_person(get_response):
    """The render pool serves people in turn, one render each at a time: a person is their user
    id, or their address while logged out."""

    def middleware(request):
        def owner():
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                return f"user:{user.pk}"
            return f"address:{request.META.get('REMOTE_ADDR', '')}"

        token = render_owner.set(owner)
        try:
            return get_response(request)
        finally:
            render_owner.reset(token)

    return middleware

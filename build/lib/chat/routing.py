from django.urls import re_path

from .consumers import ChatConsumer

websocket_urlpatterns = [
    # Any number of digits: an id too large for the database is refused like an unknown one (4403).
    re_path(r"^ws/chat/(?P<conversation_id>[0-9]+)/$", ChatConsumer.as_asgi()),
]

"""The chat WebSocket: `/ws/chat/<conversation_id>/`. The protocol is in README.md."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model

from studio.input_checks import InputError, parse_json

from . import selectors, services
from .markdown import finished_blocks
from .models import Message
from .serving import queue
from .serving.wakeups import wake_workers

CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
CATCHUP_TIMEOUT_S = 5.0
HISTORY_FRAMES = 100  # messages of the active branch sent on connect (README)
# Codes of `error` frames this module sends (the services' own come with their ChatError).
MALFORMED_FRAME = "malformed_frame"  # not a JSON text object of the protocol's shape
NOTHING_TO_STOP = "nothing_to_stop"
REFUSED = "refused"  # a refusal without a code of its own


@dataclasses.dataclass
class StreamedReply:
    """A reply this tab is being sent: its text so far and how much of it went out as blocks."""

    text: str = ""
    offset: int = 0  # in characters: text[:offset] has been sent as rendered blocks
    browser_offset: int = 0  # the same place in UTF-16 code units


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: int | None = None
    catching_up_message_id: int | None = None  # tokens for it are in the catch-up text
    watchdog: asyncio.Task | None = None

    async def connect(self):
        self.streams: dict[int, StreamedReply] = {}
        # Accept first: a close code (4401/4403) can only be sent on an open socket.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        conversation = await database_sync_to_async(selectors.conversation_for)(
            user=user, conversation_id=self.scope["url_route"]["kwargs"]["conversation_id"]
        )
        if conversation is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.conversation_id = conversation.pk
        self.group_name = conversation.group_name
        # Join before reading the history, so nothing sent in between is missed.
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        for frame in await database_sync_to_async(self._history)():
            await self.send_frame({"type": "message", "message": frame})
            if frame["status"] in Message.IN_PROGRESS:
                await self._catch_up(frame["id"])
                self._watch_reply()

    def _history(self) -> list[dict]:
        """The active branch's last messages as frames, in order (the page loads older ones as the
        person scrolls up)."""
        conversation = selectors.conversation_for(user=self.scope["user"], conversation_id=self.conversation_id)
        messages, branches = selectors.active_messages(conversation=conversation, last=HISTORY_FRAMES)
        return selectors.message_frames(messages, branches)

    def _still_signed_in(self) -> bool:
        user, session = self.scope["user"], self.scope.get("session")
        if not get_user_model().objects.filter(pk=user.pk, is_active=True).exists():
            return False
        return session is None or session.session_key is None or session.exists(session.session_key)

    async def disconnect(self, code):
        if self.watchdog:
            self.watchdog.cancel()
        if self.conversation_id is not None:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    # --- client → server ---------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.conversation_id is None:
            return
        # Someone deactivated, removed or given a new password by staff is logged out everywhere:
        # a socket opened before that is closed at its next frame instead of acting for them.
        if not await database_sync_to_async(self._still_signed_in)():
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        if text_data is None:
            await self.send_error("Send JSON text frames, not binary ones.", code=MALFORMED_FRAME)
            return
        # Cheap guard before parsing: JSON escaping at most sextuples a character.
        if len(text_data) > 6 * settings.CHAT_MAX_MESSAGE_CHARS + 1000:
            await self.send_error(
                f"The frame is too large; a message holds at most {settings.CHAT_MAX_MESSAGE_CHARS:,} characters.",
                code="message_too_long",
            )
            return
        try:
            payload = parse_json(text_data, max_depth=4)  # a frame is a flat object; deep JSON is refused
        except InputError as exc:
            await self.send_error(
                f'{exc} Send an object such as {{"type": "send", "content": "Hello"}}.', code=MALFORMED_FRAME
            )
            return
        if not isinstance(payload, dict):
            await self.send_error(
                'Send a JSON object such as {"type": "send", "content": "Hello"}.', code=MALFORMED_FRAME
            )
            return
        actions = {
            "send": self.send_message,
            "stop": self.stop_reply,
            "regenerate": self.regenerate_reply,
            "edit": self.edit_message,
            "switch": self.switch_branch,
            "continue": self.continue_reply,
        }
        action = actions.get(payload.get("type"))
        if action is None:
            await self.send_error(
                f"Unknown type {str(payload.get('type'))[:40]!r}: use send, stop, regenerate, edit, "
                "switch or continue.",
                code="unknown_type",
            )
            return
        try:
            await action(payload)
        except services.ChatError as exc:
            await self.send_error(str(exc), code=exc.code or REFUSED)

    async def send_message(self, payload):
        content, model, compare = payload.get("content"), payload.get("model"), payload.get("compare")
        if "tool_results" in payload:  # the results of the last reply's calls, as the next turn
            await self._announce(await database_sync_to_async(self._send_tool_results)(payload["tool_results"]))
            return
        if not isinstance(content, str):
            raise services.ChatError('"content" must be a string.', code=MALFORMED_FRAME)
        for name, value in (("model", model), ("compare", compare)):
            if value is not None and not isinstance(value, str):
                raise services.ChatError(f'"{name}" must be the name of a model (or left out).', code=MALFORMED_FRAME)
        await self._announce(await database_sync_to_async(self._request_reply)(content, model, compare))

    def _request_reply(self, content, model, compare):
        conversation = self._own_conversation()
        if model is not None:
            services.conversation_choose_model(conversation=conversation, model_name=model)
        if compare is not None:  # side by side: a second reply from `compare`, in the same batch
            return self._changed(
                conversation,
                services.reply_request_side_by_side(conversation=conversation, content=content, model_name=compare),
            )
        return self._changed(conversation, services.reply_request(conversation=conversation, content=content))

    def _send_tool_results(self, results):
        conversation = self._own_conversation()
        return self._changed(conversation, services.tool_results_send(conversation=conversation, results=results))

    async def edit_message(self, payload):
        content = payload.get("content")
        if not isinstance(content, str):
            raise services.ChatError('"content" must be a string.', code=MALFORMED_FRAME)
        await self._announce(await database_sync_to_async(self._edit)(payload.get("message_id"), content))

    def _edit(self, message_id, content):
        conversation = self._own_conversation()
        return self._changed(
            conversation, services.reply_edit(conversation=conversation, message_id=message_id, content=content)
        )

    async def regenerate_reply(self, payload):
        await self._announce(await database_sync_to_async(self._regenerate)(payload.get("message_id")))

    def _regenerate(self, message_id):
        conversation = self._own_conversation()
        reply = services.reply_regenerate(conversation=conversation, message_id=message_id)
        return self._changed(conversation, [reply])

    async def continue_reply(self, payload):
        await self._announce(await database_sync_to_async(self._continue)(payload.get("message_id")))

    def _continue(self, message_id):
        conversation = self._own_conversation()
        return self._changed(conversation, [services.reply_continue(conversation=conversation, message_id=message_id)])

    async def switch_branch(self, payload):
        await self._announce(await database_sync_to_async(self._switch)(payload.get("message_id")), wake=False)

    def _switch(self, message_id):
        conversation = self._own_conversation()
        active = services.branch_switch(conversation=conversation, message_id=message_id)
        # The branch's messages from the switch point down: a tab may never have seen them.
        start = active.index(int(message_id))
        return self._changed(conversation, selectors.messages_of(conversation=conversation, ids=active[start:]))

    @staticmethod
    def _changed(conversation, messages) -> tuple[list[dict], list[int]]:
        """Frames for the messages a change made or showed, and the active path after it."""
        branches = selectors.Branches.of(conversation)
        return selectors.message_frames(list(messages), branches), branches.active_path()

    async def _announce(self, change: tuple[list[dict], list[int]], wake: bool = True) -> None:
        """Tell every tab of the conversation: the messages, then the active path."""
        frames, active = change
        for frame in frames:
            await self.channel_layer.group_send(self.group_name, {"type": "chat.message", "message": frame})
        await self.channel_layer.group_send(self.group_name, {"type": "chat.branch", "active": active})
        if wake and any(frame["status"] == Message.Status.QUEUED for frame in frames):
            await wake_workers(self.channel_layer)
            self._watch_reply()

    async def stop_reply(self, payload):
        for message in await database_sync_to_async(self._stop_or_find_workers)():
            if not message.in_progress:  # was still queued: nothing generated (a continued reply is as it was)
                await self.channel_layer.group_send(
                    self.group_name,
                    {
                        "type": "chat.done",
                        "message_id": message.pk,
                        "status": message.status,
                        "usage": message.usage(),
                        "finish_reason": message.finish_reason,
                    },
                )
            else:  # the worker writing it keeps the partial text and reports "stopped"
                await self.channel_layer.send(message.worker_channel, {"type": "chat.stop", "message_id": message.pk})

    def _stop_or_find_workers(self) -> list[Message]:
        """The replies in progress (two, side by side), those still queued stopped here."""
        conversation = self._own_conversation()
        in_progress = list(Message.objects.filter(conversation=conversation, status__in=Message.IN_PROGRESS))
        if not in_progress:
            raise services.ChatError("There is no reply in progress to stop.", code=NOTHING_TO_STOP)
        stopping = []
        for message in in_progress:
            stopped_here = queue.reply_stop_if_queued(message=message)
            message.refresh_from_db()  # stopped here, or claimed by a worker meanwhile (it now has a channel)
            if stopped_here or message.in_progress:
                stopping.append(message)
        if not stopping:
            raise services.ChatError("The reply had already ended.", code=NOTHING_TO_STOP)
        return stopping

    def _own_conversation(self):
        # Checked again on every action: the conversation may have been deleted meanwhile.
        conversation = selectors.conversation_for(user=self.scope["user"], conversation_id=self.conversation_id)
        if conversation is None:
            raise services.ChatError("This conversation no longer exists.", code="conversation_gone")
        return conversation

    # --- reconnecting mid-reply ----------------------------------------------------------

    async def _catch_up(self, message_id: int) -> None:
        message = await Message.objects.filter(pk=message_id).afirst()
        if message is None or message.status != Message.Status.STREAMING or not message.worker_channel:
            return  # queued: the worker will announce it when it starts
        self.catching_up_message_id = message.pk
        await self.channel_layer.send(
            message.worker_channel,
            {"type": "chat.catchup", "message_id": message.pk, "reply_channel": self.channel_name},
        )
        asyncio.get_running_loop().call_later(CATCHUP_TIMEOUT_S, self._stop_waiting_for_catchup, message.pk)

    def _stop_waiting_for_catchup(self, message_id: int) -> None:
        # The worker never answered (it died): its lease runs out and the reply is failed.
        if self.catching_up_message_id == message_id:
            self.catching_up_message_id = None

    def _watch_reply(self) -> None:
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self._fail_reply_if_worker_lost())

    async def _fail_reply_if_worker_lost(self) -> None:
        """While a reply is in progress here: tell its place in the queue while it waits (a
        `queued` frame when it changes), and, when the sweeper has failed it (its worker died or
        never came), say so here too: the sweeper's own word may not reach this process (an
        embedded studio's job worker has a channel layer of its own). Only reads."""
        interval = max(min(settings.LLM_LEASE_SECONDS / 2, 2.0), 0.2)
        told, watched = None, None
        while True:
            await asyncio.sleep(interval)  # first: a free worker takes it before anyone needs to be told
            reply = await database_sync_to_async(selectors.reply_in_progress)(conversation_id=self.conversation_id)
            if reply is None:
                if watched is not None:
                    ended = await Message.objects.filter(pk=watched).afirst()
                    if ended is not None and ended.status == Message.Status.FAILED:
                        await self.send_frame(
                            {
                                "type": "done",
                                "message_id": ended.pk,
                                "status": ended.status,
                                "usage": ended.usage(),
                                "error": ended.error,
                            }
                        )
                return
            watched = reply.pk
            if reply.status == Message.Status.QUEUED:
                position = await database_sync_to_async(queue.queue_position)(message=reply)
                if position != told:
                    await self.send_frame({"type": "queued", "message_id": reply.pk, "position": position})
                    told = position

    # --- server → client (group and worker events) --------------------------------------

    async def chat_message(self, event):
        message = event["message"]
        stream = None
        if message["status"] in Message.IN_PROGRESS:
            stream = self.streams[message["id"]] = StreamedReply(text=message["content"])
        await self.send_frame({"type": "message", "message": message})
        if stream is not None and stream.text:  # a reply being continued: its text so far, rendered again
            await self._send_finished_blocks(message["id"], stream)

    async def chat_token(self, event):
        if event["message_id"] == self.catching_up_message_id:
            return  # already in the catch-up text that is on its way
        await self.send_frame({"type": "token", "message_id": event["message_id"], "text": event["text"]})
        stream = self.streams.setdefault(event["message_id"], StreamedReply())
        stream.text += event["text"]
        if "\n" in event["text"]:  # a Markdown block can only end at a line's end
            await self._send_finished_blocks(event["message_id"], stream)

    async def _send_finished_blocks(self, message_id: int, stream: StreamedReply) -> None:
        """The reply's blocks that more text can no longer change, rendered once on the server
        (sanitised, code highlighted, math as MathML); the tab shows the rest as text until then."""
        # In a thread: a long code block takes milliseconds to highlight, and other tabs wait on this loop.
        end, blocks = await asyncio.to_thread(finished_blocks, stream.text, stream.offset)
        if not blocks:
            return
        # The browser counts UTF-16 code units, Python code points: `end` is sent in the browser's units.
        stream.browser_offset += len(stream.text[stream.offset : end].encode("utf-16-le")) // 2
        stream.offset = end
        await self.send_frame(
            {"type": "blocks", "message_id": message_id, "end": stream.browser_offset, "html": blocks}
        )

    async def chat_catchup(self, event):
        if event["message_id"] != self.catching_up_message_id:
            return
        self.catching_up_message_id = None
        message = await Message.objects.select_related("conversation").filter(pk=event["message_id"]).afirst()
        if message is None:
            return
        frame = await database_sync_to_async(selectors.message_frame)(message=message)
        if event["text"] is not None:  # None: the reply ended meanwhile; the database has it
            frame.update(content=event["text"], status=Message.Status.STREAMING)
        await self.send_frame({"type": "message", "message": frame})
        if event["text"] is not None:
            stream = self.streams[message.pk] = StreamedReply(text=event["text"])
            await self._send_finished_blocks(message.pk, stream)

    async def chat_done(self, event):
        self.streams.pop(event["message_id"], None)
        frame = {"type": "done", "message_id": event["message_id"], "status": event["status"], "usage": event["usage"]}
        if event.get("error"):
            frame["error"] = event["error"]
        if event.get("error_code"):  # why it failed, for programs (Message.ErrorCode)
            frame["error_code"] = event["error_code"]
        if event.get("finish_reason"):  # "length": cut by the maximum tokens (an output format then incomplete)
            frame["finish_reason"] = event["finish_reason"]
        await self.send_frame(frame)

    async def chat_branch(self, event):
        await self.send_frame({"type": "branch", "active": event["active"]})

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def send_error(self, error: str, *, code: str) -> None:
        """The last frame refused: the sentence for the person, the code for programs (README)."""
        await self.send_frame({"type": "error", "error": error, "code": code})

"""Restoring placeholders in a streamed answer, whatever the chunking.

A model may emit ``[EMAIL_1]`` as ``"[EMA"`` then ``"IL_1] please"``. :class:`StreamRestorer`
holds back the tail of a chunk that could still become a known placeholder and releases it
(restored or as it was) as soon as the next chunk decides, so no known placeholder ever reaches
the client, and the text it emits is exactly the restored full text.

Text and each tool call's arguments are separate channels. Streams emit one content block
after another, so when the stream moves to another channel the previous one is flushed: that
keeps the client's event order. Tool-call arguments are JSON, so their values come back
JSON-escaped.
"""

from __future__ import annotations

from hybridgate.privacy.redaction import RedactionMap
from hybridgate.types import StreamEnd, StreamEvent, TextDelta, ToolCallDelta

_TEXT = "text"


class StreamRestorer:
    """Feed it every event of one stream, in order; send on what it returns.

    >>> restorer = StreamRestorer(RedactionMap({"[EMAIL_1]": "jane@example.org"}))
    >>> [e.text for e in restorer.feed(TextDelta("write to [EMA")) if isinstance(e, TextDelta)]
    ['write to ']
    >>> [e.text for e in restorer.feed(TextDelta("IL_1].")) if isinstance(e, TextDelta)]
    ['jane@example.org.']
    """

    def __init__(self, redactions: RedactionMap) -> None:
        self._map = redactions
        self._pending: dict[str | int, str] = {}
        self._active: str | int | None = None

    def feed(self, event: StreamEvent) -> list[StreamEvent]:
        """The events to send now for ``event`` (a ``StreamEnd`` first flushes what is held)."""
        if isinstance(event, StreamEnd):
            return [*self.flush(), event]
        channel: str | int = _TEXT if isinstance(event, TextDelta) else event.index
        out: list[StreamEvent] = []
        if self._active is not None and self._active != channel:
            out.extend(self._flush_channel(self._active))
        self._active = channel
        if isinstance(event, TextDelta):
            text = self._release(channel, event.text)
            if text:
                out.append(TextDelta(text))
        else:
            arguments = self._release(channel, event.arguments)
            if arguments or event.id is not None or event.name is not None:
                out.append(ToolCallDelta(event.index, event.id, event.name, arguments))
        return out

    def flush(self) -> list[StreamEvent]:
        """Release everything held (at the end of the stream, or before an error event)."""
        out: list[StreamEvent] = []
        for channel in list(self._pending):
            out.extend(self._flush_channel(channel))
        self._active = None
        return out

    def _release(self, channel: str | int, chunk: str) -> str:
        buffer = self._pending.pop(channel, "") + chunk
        if not buffer or not len(self._map):
            return buffer
        hold = self._map.hold_from(buffer)
        if hold < len(buffer):
            self._pending[channel] = buffer[hold:]
        return self._restore(channel, buffer[:hold])

    def _flush_channel(self, channel: str | int) -> list[StreamEvent]:
        held = self._pending.pop(channel, "")
        if not held:
            return []
        text = self._restore(channel, held)
        if channel == _TEXT:
            return [TextDelta(text)]
        assert isinstance(channel, int)
        return [ToolCallDelta(channel, arguments=text)]

    def _restore(self, channel: str | int, text: str) -> str:
        return self._map.restore(text) if channel == _TEXT else self._map.restore_json(text)

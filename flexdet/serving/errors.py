"""Errors of serving: what a client tells its caller when the server refuses a request or is gone."""

from __future__ import annotations

from flexdet.errors import FlexdetError


class ServerError(FlexdetError):
    """The inference server cannot be reached, refused a request, or failed to start."""


class StreamLostError(ServerError):
    """The server holds no state for this stream any more (it restarted, or the stream idled out): start a new
    sequence with `client.stream(stream_id)`."""


class UnreachableError(ServerError):
    """Nothing answers at the server's address (it is down or restarting); the next request reconnects."""

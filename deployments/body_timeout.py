"""A request whose body stops arriving is answered 408, so a stalled or slow-dripping upload cannot hold a request
slot until the client gives up.

Pure ASGI, outermost of the app's middleware: while the body is incomplete, each `receive` may wait at most the
idle timeout; past it the client gets the answer at once, and the app, which was waiting for the body, sees the
client disconnect (so it stops, and whatever it would send is dropped). Once the body is complete, `receive` waits
as long as the app wants (a streaming response listens for the disconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]  # (scope, receive, send)


class BodyTimeout:
    """`answer(seconds)` -> the ASGI app that answers a stalled request; `seconds_of(scope)` -> its idle timeout
    (None: none)."""

    def __init__(
        self,
        app: ASGIApp,
        seconds_of: Callable[[MutableMapping[str, Any]], float | None],
        answer: Callable[[float], ASGIApp],
    ) -> None:
        self.app, self.seconds_of, self.answer = app, seconds_of, answer

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        seconds = self.seconds_of(scope) if scope["type"] == "http" else None
        if seconds is None:
            await self.app(scope, receive, send)
            return
        body_done, gave_up, answered, responding = False, False, False, False

        async def guarded_receive() -> Message:
            nonlocal body_done, gave_up, answered
            if gave_up:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), seconds)
            except TimeoutError:
                gave_up = True
                if not responding:  # an app that already began its answer keeps it
                    answered = True
                    await self.answer(seconds)(scope, receive, send)
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responding
            if not answered:
                responding = True
                await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not gave_up:  # after the timeout, the app's failure to read the body is expected
                raise

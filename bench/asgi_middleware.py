"""CPU per request of an HTTP middleware written as `@app.middleware("http")` (Starlette's BaseHTTPMiddleware)
against the same check as a pure ASGI middleware, as the ingress's Admission is, and against none.

    python bench/asgi_middleware.py
    python bench/asgi_middleware.py --requests 10000 --body-kb 160

Each request is a POST of the body to a FastAPI route that reads it, called straight through ASGI in this process
(no server, no sockets), so what differs is the middleware alone. Prints one markdown table (for BENCHMARKS.md):
process CPU microseconds per request, the median of 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from fastapi import FastAPI, Request


def build(middleware: str) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    if middleware == "function":

        @app.middleware("http")
        async def check(request: Request, call_next):
            request.headers.get("authorization")
            return await call_next(request)

    elif middleware == "pure ASGI":

        class Check:
            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                Request(scope).headers.get("authorization")
                await self.app(scope, receive, send)

        app.add_middleware(Check)
    return app


async def post(app: FastAPI, body: bytes) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


async def measure(requests: int, body: bytes) -> dict[str, float]:
    apps = {name: build(name) for name in ("none", "function", "pure ASGI")}
    for app in apps.values():
        for _ in range(200):  # warm-up
            await post(app, body)
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(5):
        for name, app in apps.items():
            started = time.process_time()
            for _ in range(requests):
                await post(app, body)
            rounds[name].append((time.process_time() - started) / requests * 1e6)
    return {name: statistics.median(values) for name, values in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per middleware and round")
    parser.add_argument("--body-kb", type=int, default=80, help="upload size (a 5 s FLAC clip is about 80 KB)")
    args = parser.parse_args()
    results = asyncio.run(measure(args.requests, b"x" * (args.body_kb * 1024)))
    print("| middleware | CPU us per request |\n|---|---|")
    for name, micros in results.items():
        print(f"| {name} | {micros:.0f} |")


if __name__ == "__main__":
    main()

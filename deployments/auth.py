"""API keys: which clients the service lets in.

Clients send a key as OpenAI's do: `Authorization: Bearer KEY`, or, on the WebSocket (browsers cannot set its
headers), as the subprotocol `openai-insecure-api-key.KEY`. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, against every key, so neither a key's length nor its first differing byte shows in the
time an answer takes; no key is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

API_KEY_ENV = "PARAKEET_API_KEY"  # one key, or several separated by commas
KEY_SUBPROTOCOL = "openai-insecure-api-key."  # the WebSocket subprotocol that carries a key
OPEN_PATHS = frozenset({"/healthz"})  # answered without a key: load balancers' health checks carry none


def read_key_file(path: str | os.PathLike) -> list[str]:
    """The keys of a file, one a line; blank lines and lines starting with # are skipped.

    Raises ValueError, naming the file, when it cannot be read or holds no key."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read the API key file {path}: {err.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"the API key file {path} holds no key (one a line)")
    return keys


def collect_keys(
    keys: Iterable[str] = (), key_file: str | os.PathLike | None = None, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Every key the service accepts: `keys`, those of `key_file`, and those of $PARAKEET_API_KEY."""
    collected = list(keys)
    if key_file:
        collected += read_key_file(key_file)
    collected += [key.strip() for key in environ.get(API_KEY_ENV, "").split(",") if key.strip()]
    for key in collected:
        if any(char.isspace() for char in key) or not key.isprintable():
            raise ValueError("an API key must be printable, without spaces")
    return collected


class ApiKeys:
    """The accepted keys (none: everyone is let in)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def admits(self, key: str) -> bool:
        """Whether `key` is one of the keys; every key is compared, so the time taken tells nothing."""
        presented = _digest(key)
        return sum(hmac.compare_digest(presented, digest) for digest in self._digests) > 0

    def check_http(self, path: str, authorization: str | None) -> str | None:
        """Why a request to `path` with this Authorization header is refused, or None when it is let in."""
        if not self._digests or path in OPEN_PATHS:
            return None
        return self._check_authorization(authorization)

    def check_websocket(self, authorization: str | None, subprotocols: list[str]) -> str | None:
        """Why a WebSocket handshake is refused: its key comes in the Authorization header or a subprotocol."""
        if not self._digests:
            return None
        offered = [protocol.removeprefix(KEY_SUBPROTOCOL) for protocol in subprotocols if is_key_protocol(protocol)]
        if not authorization and not offered:
            return f"no API key: send the header `Authorization: Bearer KEY` or the subprotocol {KEY_SUBPROTOCOL}KEY"
        if authorization:
            return self._check_authorization(authorization)
        return None if any(self.admits(key) for key in offered) else "invalid API key"

    def _check_authorization(self, authorization: str | None) -> str | None:
        if not authorization:
            return "no API key: send it as the header `Authorization: Bearer KEY`"
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "the Authorization header must be `Bearer KEY`"
        return None if self.admits(key.strip()) else "invalid API key"


def is_key_protocol(subprotocol: str) -> bool:
    return subprotocol.startswith(KEY_SUBPROTOCOL)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()

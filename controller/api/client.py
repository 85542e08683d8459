"""A client of the flow-debug REST API (controller/api/app.py), for the CLI and scripts.

    ApiClient(base_url, token).call("GET", "/v1/switches", params={...}) -> JSON or text
    ApiClientError: .status (0: unreachable), .message, .field, .doc (the JSON error)

Standard library only (urllib): the CLI needs nothing the controller does not.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

DEFAULT_API = "http://127.0.0.1:9641"


class ApiClientError(RuntimeError):
    def __init__(self, status: int, message: str, field: Optional[str] = None,
                 doc: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.field, self.doc = status, message, field, doc or {}

    def __str__(self) -> str:
        return f"{self.status or 'unreachable'}: {self.message}" if self.status else self.message


class ApiClient:
    def __init__(self, base_url: str = DEFAULT_API, token: Optional[str] = None,
                 timeout: float = 60.0):
        self.base = base_url.rstrip("/")
        if self.base.endswith("/v1"):  # the address as the controller's log prints it
            self.base = self.base[:-len("/v1")]
        self.token = token if token is not None else os.environ.get("SOCKETNET_TOKEN")
        self.timeout = timeout

    def call(self, method: str, path: str, params: Optional[dict] = None,
             body: Optional[dict] = None):
        """The answer's JSON (or text for text/plain); ApiClientError otherwise."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base + urllib.parse.quote(path, safe="/:")
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _decode(response.headers.get("Content-Type", ""), response.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                doc = json.loads(payload)
                error = doc.get("error", {}) if isinstance(doc, dict) else {}
            except ValueError:
                doc, error = {}, {}
            raise ApiClientError(exc.code, error.get("message") or f"HTTP {exc.code}",
                                 error.get("field"), doc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiClientError(0, f"cannot reach the socketnet API at {self.base}: "
                                    f"{reason}") from None

    def get(self, path: str, **params):
        return self.call("GET", path, params=params)


def _decode(content_type: str, payload: bytes):
    if content_type.startswith("application/json"):
        return json.loads(payload)
    return payload.decode("utf-8", "replace")

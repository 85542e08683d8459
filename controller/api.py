"""The flow-debug REST API: routing, access, validation, JSON and its OpenAPI document.

A plain WSGI application over the controller's shared `Runtime` and a `Backend`
that talks to the switches (apps/rest.py gives the live one; the unit tests a
fake). Nothing here imports os-ken, so every rule below is tested without a
switch, as Faucet keeps its valve apart from its app.

    Api(runtime, backend)        the WSGI app; `Api.openapi()` its OpenAPI 3 document
    ROUTES                       every endpoint, once: what the router, the access
                                 check and the OpenAPI document are all made from

Versioned endpoints live under /v1; the read endpoints of Ryu's ofctl_rest
(/stats/...) answer in Ryu's own format, so tooling written for Ryu keeps working.

Access: "open" endpoints (health, readiness, this document) answer anyone;
"read" endpoints need `Authorization: Bearer TOKEN` unless the config sets
`socketnet.rest.open_reads`; "write" endpoints always need the token. The token
comes from `rest.token_file` (first line), else from the environment variable
`rest.token_env`; with none configured, write endpoints answer 403.

Errors are JSON, `{"error": {"status", "message", "field"}}`: 400 for bad input
(naming the field), 401/403 for access, 404 for an unknown switch, entry or
path, 405, 503 when a switch or Open vSwitch cannot be reached. Client input
never causes a 500; anything unexpected is logged and answered 500.
"""
from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import re
import time
from typing import NamedTuple, Optional, Protocol
from urllib.parse import parse_qs

from controller.classifier import (CLASS_OF_MARK, DEFAULT, UNROUTABLE, Classifier, Flow5,
                                   address_int, commit_actions)
from controller.compiler import conntrack_zone, own_mac
from controller.conntrack import ConntrackError, parse_id
from controller.flow import Apply, Flow, Output
from controller.pipeline import Purpose, purpose_of
from controller.switches import Runtime, SwitchState
from topology.config import ABSENT
from topology.model import Host, Role, TrafficClass

LOG = logging.getLogger("socketnet.api")

VERSION = "v1"
MAX_BODY = 64 * 1024


class ApiError(Exception):
    """An answer other than 200, with what went wrong and (for bad input) the field."""

    def __init__(self, status: int, message: str, field: Optional[str] = None, **extra):
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra

    def body(self) -> dict:
        return {"error": {"status": self.status, "message": self.message, "field": self.field,
                          **self.extra}}


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", field)


# --- what the API needs from the switches ---------------------------------------


class FlowStat(NamedTuple):
    """One entry of a switch's flow table with its counters. `flow` is None when
    socketnet cannot read the entry (a foreign action); `text` then describes it."""
    flow: Optional[Flow]
    table: int
    priority: int
    cookie: int
    packets: int
    bytes: int
    duration: float
    text: str = ""


class Backend(Protocol):
    """What apps/rest.py does on the switches and on Open vSwitch. Every method may
    raise ApiError (503 when the switch or ovs-vswitchd does not answer)."""

    def flow_stats(self, dpid: int) -> list: ...             # of FlowStat
    def port_stats(self, dpid: int) -> dict: ...             # port number -> counters
    def ryu(self, what: str, dpid: Optional[int], argument=None) -> object: ...  # Ryu's answer
    def connections(self, zone: int) -> list: ...             # of controller.conntrack.Connection
    def delete_connection(self, zone: int, connection) -> None: ...
    def flush_connections(self, dpid: int, zone: int) -> None: ...
    def trace(self, bridge: str, flow: str, ct_next: Optional[str] = None,
              ct_mark: Optional[int] = None) -> dict: ...      # see `trace` below
    def audit(self) -> dict: ...


# --- routes ----------------------------------------------------------------------


class Param(NamedTuple):
    name: str
    where: str  # "path" or "query"
    schema: dict
    description: str = ""


class Route(NamedTuple):
    method: str
    path: str  # /v1/switches/{switch}
    handler: str  # the Api method answering it
    access: str  # open, read, write
    summary: str
    params: tuple = ()
    body: Optional[dict] = None  # JSON schema of the request body
    response: dict = {"type": "object"}
    text: bool = False  # also answers text/plain (format=ofctl)

    @property
    def regex(self):
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


_SWITCH = Param("switch", "path", {"type": "string"},
                "bridge name, or datapath id (decimal, 0x-hex or 16 hex digits)")
_DPID = Param("dpid", "path", {"type": "string"}, "datapath id (decimal or 0x-hex)")
_CLASSES = [c.value for c in TrafficClass]
_PURPOSES = [p.label for p in Purpose] + ["foreign"]
_PROTOS = ["tcp", "udp", "icmp"]
_NULLSTR = {"type": "string", "nullable": True}
_PORT16 = {"type": "integer", "minimum": 0, "maximum": 65535}
_PORT32 = {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF}
_IPV4 = {"type": "string", "format": "ipv4"}

_SWITCH_DOC = {"type": "object", "required": ["dpid", "bridge", "connected"], "properties": {
    "dpid": {"type": "string"}, "dpid_int": {"type": "integer"}, "bridge": _NULLSTR,
    "connected": {"type": "boolean"}, "connects": {"type": "integer"},
    "ports": {"type": "integer"}, "desired_flows": {"type": "integer"},
    "last_sync": {"type": "number", "nullable": True}, "last_error": _NULLSTR,
    "last_plan": _NULLSTR}}
_FLOW_DOC = {"type": "object", "required": ["table", "priority", "cookie", "ofctl"],
             "properties": {
                 "table": {"type": "integer"}, "priority": {"type": "integer"},
                 "cookie": {"type": "string"}, "purpose": _NULLSTR, "class": _NULLSTR,
                 "match": {"type": "object", "nullable": True}, "packets": {"type": "integer"},
                 "bytes": {"type": "integer"}, "duration": {"type": "number"},
                 "ofctl": {"type": "string"}}}
_CLASSIFY_BODY = {"type": "object", "required": ["src", "dst", "proto"],
                  "additionalProperties": False, "properties": {
                      "src": _IPV4, "dst": _IPV4, "proto": {"type": "string", "enum": _PROTOS},
                      "sport": _PORT16, "dport": _PORT16}}
_TRACE_BODY = {"type": "object", "required": ["bridge", "in_port", "dst"],
               "additionalProperties": False, "properties": {
                   "bridge": {"type": "string"}, "in_port": {"type": "string"},
                   "proto": {"type": "string", "enum": _PROTOS + ["arp"]},
                   "src": _IPV4, "dst": _IPV4, "sport": _PORT16, "dport": _PORT16,
                   "eth_src": {"type": "string"}, "eth_dst": {"type": "string"}}}
_DECISION_DOC = {"type": "object", "required": ["packet", "class", "rule"], "properties": {
    "packet": {"type": "string"}, "class": {"type": "string", "enum": _CLASSES},
    "rule": {"type": "string"}, "overruled": _NULLSTR, "why": _NULLSTR,
    "mark": {"type": "integer"}, "commit": {"type": "string"}, "path": {"type": "string"}}}

# Ryu's ofctl_rest reads socketnet answers, in Ryu's own format.
RYU_READS = ("desc", "flow", "aggregateflow", "port", "portdesc", "table", "tablefeatures",
             "meter", "meterconfig", "meterfeatures")
_RYU_FLOW_FILTER = {"type": "object", "additionalProperties": False, "properties": {
    "table_id": {"type": "integer", "minimum": 0, "maximum": 255},
    "out_port": _PORT32, "out_group": _PORT32,
    "cookie": {"type": "integer", "minimum": 0}, "cookie_mask": {"type": "integer", "minimum": 0},
    "priority": {"type": "integer", "minimum": 0, "maximum": 65535},
    "flags": {"type": "integer", "minimum": 0, "maximum": 65535},
    "match": {"type": "object"}}}

ROUTES = (
    Route("GET", "/v1/health", "health", "open", "The process answers",
          response={"type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string"}, "uptime": {"type": "number"}}}),
    Route("GET", "/v1/ready", "ready", "open",
          "200 when every bridge of the config is connected and in sync, else 503",
          response={"type": "object", "required": ["ready"],
                    "properties": {"ready": {"type": "boolean"},
                                   "bridges": {"type": "object"}}}),
    Route("GET", "/v1/openapi.json", "openapi_doc", "open", "This document"),
    Route("GET", "/v1/switches", "switches", "read", "Switches and their connection state",
          response={"type": "array", "items": _SWITCH_DOC}),
    Route("GET", "/v1/switches/{switch}", "switch", "read", "One switch", (_SWITCH,),
          response=_SWITCH_DOC),
    Route("GET", "/v1/switches/{switch}/flows", "flows", "read",
          "Flows with counters, as JSON or (format=ofctl) ovs-ofctl lines",
          (_SWITCH,
           Param("table", "query", {"type": "integer", "minimum": 0, "maximum": 254}),
           Param("purpose", "query", {"type": "string", "enum": _PURPOSES},
                 "the purpose its cookie says"),
           Param("port", "query", {"type": "string"},
                 "port name or number: flows matching it as in_port or outputting to it"),
           Param("class", "query", {"type": "string", "enum": _CLASSES},
                 "the traffic class the flow carries"),
           Param("format", "query", {"type": "string", "enum": ["json", "ofctl"]})),
          response={"type": "object", "required": ["bridge", "flows"],
                    "properties": {"bridge": _NULLSTR, "dpid": {"type": "string"},
                                   "flows": {"type": "array", "items": _FLOW_DOC}}},
          text=True),
    Route("GET", "/v1/switches/{switch}/ports", "ports", "read",
          "Ports with their roles and counters", (_SWITCH,),
          response={"type": "object", "required": ["bridge", "ports"],
                    "properties": {"bridge": _NULLSTR, "ports": {"type": "array", "items": {
                        "type": "object", "required": ["name", "number"]}}}}),
    Route("GET", "/v1/cache", "cache", "read",
          "Decided connections: the mesh's conntrack zone, with filters",
          (Param("src", "query", _IPV4), Param("dst", "query", _IPV4),
           Param("class", "query", {"type": "string", "enum": _CLASSES + ["reply"]},
                 "its class; reply: a management container's own connection"),
           Param("proto", "query", {"type": "string", "enum": _PROTOS}),
           Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100000})),
          response={"type": "object", "required": ["entries", "count", "zone"],
                    "properties": {"entries": {"type": "array"}, "count": {"type": "integer"},
                                   "zone": {"type": "integer"},
                                   "counted": {"type": "integer", "nullable": True},
                                   "drops": {"type": "object", "nullable": True}}}),
    Route("DELETE", "/v1/cache", "cache_flush", "write",
          "Flush the mesh's conntrack zone: every connection is decided again (on the "
          "userspace datapath established TCP connections end)",
          response={"type": "object", "required": ["deleted"],
                    "properties": {"deleted": {"type": "integer", "nullable": True}}}),
    Route("DELETE", "/v1/cache/{entry}", "cache_delete", "write",
          "Delete one connection from the mesh's conntrack zone",
          (Param("entry", "path", {"type": "string"},
                 "an entry id as the list gives it: tcp-SRC-SPORT-DST-DPORT, "
                 "udp-SRC-SPORT-DST-DPORT or icmp-SRC-DST-ID"),),
          response={"type": "object", "required": ["deleted"],
                    "properties": {"deleted": {"type": "string"}}}),
    Route("POST", "/v1/classify", "classify", "read",
          "Dry run: how a Netmaker-ingress packet would be classified",
          body=_CLASSIFY_BODY, response=_DECISION_DOC),
    Route("POST", "/v1/trace", "trace", "read",
          "Where a described packet goes through both bridges by the installed tables",
          body=_TRACE_BODY,
          response={"type": "object", "required": ["hops", "exits"],
                    "properties": {"hops": {"type": "array"}, "exits": {"type": "array"},
                                   "controller": {"type": "array"},
                                   "drop": {"type": "boolean"}}}),
    Route("GET", "/v1/audit", "audit", "read",
          "The isolation matrix (the README\'s N-rules) traced on the live bridges; violations",
          response={"type": "object", "required": ["ok", "violations"],
                    "properties": {"ok": {"type": "boolean"}, "packets": {"type": "integer"},
                                   "violations": {"type": "array"}}}),
    Route("GET", "/v1/config", "config", "read", "The running config, secrets redacted"),
    Route("POST", "/v1/reload", "reload", "write",
          "Re-read the config file the controller runs (validated first; a bad one "
          "changes nothing)",
          body={"type": "object", "additionalProperties": False, "properties": {}},
          response={"type": "object", "required": ["reloaded"],
                    "properties": {"reloaded": {"type": "string"}}}),
    # Ryu's ofctl_rest, read endpoints, Ryu's answers.
    Route("GET", "/stats/switches", "ryu_switches", "read", "Ryu: datapath ids",
          response={"type": "array", "items": {"type": "integer"}}),
    *(Route("GET", f"/stats/{what}/{{dpid}}", f"ryu_{what}", "read", f"Ryu: {what}", (_DPID,))
      for what in RYU_READS),
    *(Route("POST", f"/stats/{what}/{{dpid}}", f"ryu_{what}_filtered", "read",
            f"Ryu: {what}, filtered as ofctl_rest filters (match, table_id, out_port, ...)",
            (_DPID,), body=_RYU_FLOW_FILTER) for what in ("flow", "aggregateflow")),
    Route("GET", "/stats/port/{dpid}/{port}", "ryu_port_one", "read", "Ryu: one port's stats",
          (_DPID, Param("port", "path", _PORT32))),
)

_ERRORS = {400: "Bad input; error.field names it", 401: "Missing or wrong bearer token",
           403: "No token configured for this endpoint", 404: "Unknown switch, entry or path",
           503: "A switch or Open vSwitch is unreachable, or not ready"}


# --- the application -------------------------------------------------------------


class Request(NamedTuple):
    method: str
    path: dict  # path parameters
    query: dict  # name -> last value
    body: Optional[dict]
    headers: dict


class Response(NamedTuple):
    status: int
    body: object
    content_type: str = "application/json"
    headers: tuple = ()


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _dpid_text(dpid: int) -> str:
    return f"{dpid:016x}"


def parse_dpid(text: str, field: str = "switch") -> int:
    """A datapath id: decimal, 0x-hex, or 16 hex digits as OVS prints it."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            value = int(t[2:], 16)
        elif len(t) == 16 and re.fullmatch(r"[0-9a-f]{16}", t):
            value = int(t, 16)
        elif t.isdigit() and t.isascii():
            value = int(t)
        else:
            raise ValueError
    except ValueError:
        raise ApiError(404, f"no switch {text!r}", field) from None
    if not 0 <= value < 2 ** 64:
        raise ApiError(404, f"no switch {text!r}", field)
    return value


def token_of(host: Host) -> Optional[str]:
    """The bearer token the config points at: token_file's first line, else the
    environment variable token_env; None when neither gives one."""
    s = host.settings
    if s.rest_token_file:
        try:
            with open(s.rest_token_file, encoding="utf-8") as f:
                line = f.readline().strip()
            if line:
                return line
        except OSError as exc:
            LOG.warning("REST token file %s: %s", s.rest_token_file, exc)
    value = os.environ.get(s.rest_token_env, "").strip()
    return value or None


class Api:
    def __init__(self, runtime: Runtime, backend: Backend):
        self.runtime = runtime
        self.backend = backend
        self._routes = [(r, r.regex) for r in ROUTES]

    # --- WSGI ---------------------------------------------------------------

    def __call__(self, environ, start_response):
        try:
            response = self.handle(environ)
        except Exception:  # the last line of defence: log it, answer 500
            LOG.exception("REST %s %s failed", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            response = Response(500, ApiError(500, "internal error; see the log").body())
        if response.content_type == "application/json":
            payload = (json.dumps(response.body, indent=1, sort_keys=False) + "\n").encode()
        else:
            payload = str(response.body).encode()
        headers = [("Content-Type", f"{response.content_type}; charset=utf-8"),
                   ("Content-Length", str(len(payload))), *response.headers]
        start_response(f"{response.status} {_REASONS.get(response.status, '')}", headers)
        return [payload]

    def handle(self, environ) -> Response:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        raw = environ.get("PATH_INFO", "") or "/"
        try:
            path = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            path = raw
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        allowed = []
        try:
            for route, regex in self._routes:
                m = regex.match(path)
                if not m:
                    continue
                if route.method != method:
                    allowed.append(route.method)
                    continue
                self._check_access(route, environ)
                request = Request(method, m.groupdict(), self._query(route, environ),
                                  self._body(route, environ),
                                  {"accept": environ.get("HTTP_ACCEPT", "")})
                result = getattr(self, route.handler)(request)
                return result if isinstance(result, Response) else Response(200, result)
            if allowed:
                return Response(405, ApiError(405, f"{path} answers {', '.join(allowed)}").body(),
                                headers=(("Allow", ", ".join(allowed)),))
            if path.startswith("/stats/"):
                offered = ", ".join(["switches", *RYU_READS, "port/{dpid}/{port}"])
                raise ApiError(404, f"no endpoint {path}: of Ryu's ofctl_rest socketnet offers "
                                    f"the reads /stats/{{{offered}}} (flow and aggregateflow "
                                    "also as POST with a filter); nothing that writes", "path")
            raise ApiError(404, f"no endpoint {path}; see /{VERSION}/openapi.json", "path")
        except ApiError as exc:
            headers = ((("WWW-Authenticate", 'Bearer realm="socketnet"'),)
                       if exc.status == 401 else ())
            return Response(exc.status, exc.body(), headers=headers)

    def _check_access(self, route: Route, environ) -> None:
        if route.access == "open":
            return
        host = self.runtime.host
        if route.access == "read" and host.settings.rest_open_reads:
            return
        token = token_of(host)
        if token is None:
            raise ApiError(403, "no REST token is configured (socketnet.rest.token_file or "
                                f"${host.settings.rest_token_env}); this endpoint is closed",
                           "Authorization")
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode("utf-8", "replace"), token.encode()):
            raise ApiError(401, "a valid 'Authorization: Bearer TOKEN' header is required",
                           "Authorization")

    @staticmethod
    def _query(route: Route, environ) -> dict:
        raw = environ.get("QUERY_STRING", "")
        try:
            pairs = parse_qs(raw.encode("latin-1").decode("utf-8"), keep_blank_values=True,
                             strict_parsing=False)
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise bad("query", "not UTF-8") from None
        known = {p.name: p for p in route.params if p.where == "query"}
        out = {}
        for name, values in pairs.items():
            if name not in known:
                raise bad(name, f"unknown query parameter (this endpoint takes "
                                f"{', '.join(known) or 'none'})")
            out[name] = _coerce(name, values[-1], known[name].schema)
        return out

    @staticmethod
    def _body(route: Route, environ) -> Optional[dict]:
        if route.body is None:
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise bad("Content-Length", "not a number") from None
        if length > MAX_BODY:
            raise ApiError(413, f"body over {MAX_BODY} bytes", "body")
        data = environ["wsgi.input"].read(length) if length > 0 else b""
        if not data.strip():
            body = {}
        else:
            try:
                body = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise bad("body", f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad("body", "must be a JSON object")
        _check_object(body, route.body)
        return body

    # --- helpers --------------------------------------------------------------

    def _host(self) -> Host:
        return self.runtime.host

    def _state(self, ident: str) -> SwitchState:
        for state in self.runtime.switches.values():
            if state.bridge == ident:
                return state
        dpid = parse_dpid(ident)
        state = self.runtime.switches.get(dpid)
        if state is None:
            raise ApiError(404, f"no switch {ident!r}", "switch")
        return state

    @staticmethod
    def _connected(state: SwitchState) -> SwitchState:
        if not state.connected:
            raise ApiError(503, f"switch {state.bridge or _dpid_text(state.dpid)} is not "
                                "connected", "switch")
        return state

    def _mesh(self) -> SwitchState:
        state = self.runtime.by_bridge(self._host().mesh.name)
        if state is None:
            raise ApiError(503, f"the mesh bridge {self._host().mesh.name} is not connected")
        return state

    # --- health -------------------------------------------------------------------

    def health(self, req):
        return {"status": "ok", "uptime": round(time.time() - self.runtime.started, 3)}

    def ready(self, req):
        bridges = {}
        for bridge in self._host().bridges:
            state = self.runtime.by_bridge(bridge.name)
            if state is None:
                bridges[bridge.name] = "not connected"
            elif state.last_error:
                bridges[bridge.name] = f"sync failed: {state.last_error}"
            elif not state.last_sync:
                bridges[bridge.name] = "syncing"
            else:
                bridges[bridge.name] = "in sync"
        ready = all(v == "in sync" for v in bridges.values())
        return Response(200 if ready else 503, {"ready": ready, "bridges": bridges})

    def openapi_doc(self, req):
        return openapi()

    # --- switches, flows, ports ----------------------------------------------------

    @staticmethod
    def _switch_doc(state: SwitchState) -> dict:
        return {"dpid": _dpid_text(state.dpid), "dpid_int": state.dpid, "bridge": state.bridge,
                "connected": state.connected, "connects": state.connects,
                "ports": len(state.ports), "desired_flows": len(state.desired),
                "last_sync": state.last_sync or None, "last_error": state.last_error or None,
                "last_plan": state.last_plan.summary() if state.last_plan else None}

    def switches(self, req):
        return [self._switch_doc(s) for _, s in sorted(self.runtime.switches.items())]

    def switch(self, req):
        return self._switch_doc(self._state(req.path["switch"]))

    def flows(self, req):
        state = self._connected(self._state(req.path["switch"]))
        q = req.query
        port = None
        if "port" in q:
            port = _port_number(state, q["port"])
        names = state.port_names()
        out, lines = [], []
        for stat in self.backend.flow_stats(state.dpid):
            if "table" in q and stat.table != q["table"]:
                continue
            purpose = purpose_of(stat.cookie)
            label = purpose.label if purpose else "foreign"
            if "purpose" in q and label != q["purpose"]:
                continue
            cls = flow_class(stat.flow, purpose)
            if "class" in q and cls != q["class"]:
                continue
            if port is not None and not _touches(stat.flow, port):
                continue
            line = _dump_line(stat, names)
            lines.append(line)
            out.append({"table": stat.table, "priority": stat.priority,
                        "cookie": f"{stat.cookie:#x}", "purpose": label, "class": cls,
                        "match": stat.flow.match_dict if stat.flow else None,
                        "packets": stat.packets, "bytes": stat.bytes,
                        "duration": stat.duration, "ofctl": line})
        if q.get("format") == "ofctl":
            return Response(200, "".join(f"{line}\n" for line in lines), "text/plain")
        return {"bridge": state.bridge, "dpid": _dpid_text(state.dpid), "flows": out}

    def ports(self, req):
        state = self._connected(self._state(req.path["switch"]))
        counters = self.backend.port_stats(state.dpid)
        configured = {}
        if state.bridge:
            try:
                configured = {p.name: p for p in self._host().bridge(state.bridge).ports}
            except KeyError:
                configured = {}
        ports = []
        for name, sp in sorted(state.ports.items(), key=lambda kv: kv[1].number):
            port = configured.get(name)
            role = (str(port.role) if port else
                    "local" if name == state.bridge else "not in the config")
            doc = {"name": name, "number": sp.number, "mac": sp.mac, "role": role,
                   "counters": counters.get(sp.number)}
            if port is not None and port.interface and port.interface != port.name:
                doc["adapter_for"] = port.interface
            if port is not None and port.container is not None:
                doc["container"] = port.container.name
                doc["address"] = str(port.container.address)
            ports.append(doc)
        missing = sorted(set(configured) - set(state.ports))
        return {"bridge": state.bridge, "ports": ports, "missing": missing}

    # --- the classifier cache ---------------------------------------------------------

    def _zone(self) -> int:
        host = self._host()
        return conntrack_zone(host, host.mesh)

    def cache(self, req):
        zone = self._zone()
        q = req.query
        entries = []
        for connection in self.backend.connections(zone):
            entry = connection.doc()
            if any(name in q and entry.get(name) != q[name]
                   for name in ("src", "dst", "class", "proto")):
                continue
            entries.append(entry)
        entries.sort(key=lambda e: e["id"])
        count = len(entries)
        if "limit" in q:
            entries = entries[:q["limit"]]
        cache = getattr(self.runtime, "decision_cache", None)
        return {"zone": zone, "entries": entries, "count": count,
                "counted": len(cache) if cache is not None else None,
                "drops": dict(cache.drops) if cache is not None else None}

    def cache_delete(self, req):
        zone = self._zone()
        try:
            wanted = parse_id(req.path["entry"])
        except ConntrackError as exc:
            raise bad("entry", str(exc)) from None
        for connection in self.backend.connections(zone):
            if connection.id == wanted.id:
                self.backend.delete_connection(zone, connection)
                cache = getattr(self.runtime, "decision_cache", None)
                if cache is not None:
                    cache.forget(Flow5.of(connection.src, connection.dst, connection.proto,
                                          connection.sport, connection.dport))
                return {"deleted": connection.id}
        raise ApiError(404, f"no connection {req.path['entry']!r} in zone {zone}", "entry")

    def cache_flush(self, req):
        state = self._mesh()
        zone = self._zone()
        try:
            count = len(self.backend.connections(zone))
        except ApiError:
            count = None  # the control socket is not reachable; the flush needs only OpenFlow
        self.backend.flush_connections(state.dpid, zone)
        cache = getattr(self.runtime, "decision_cache", None)
        if cache is not None:
            cache.clear()
        return {"deleted": count}

    # --- dry runs -------------------------------------------------------------------------

    def classify(self, req):
        return classify_doc(self._host(), req.body)

    def trace(self, req):
        host = self._host()
        body = req.body
        try:
            bridge = host.bridge(body["bridge"])
        except KeyError:
            raise bad("bridge", f"not a bridge of the config ({host.mesh.name}, "
                                f"{host.privacy.name})") from None
        state = self.runtime.by_bridge(bridge.name)
        flow = trace_flow(host, bridge.name, body, state)
        result = self.backend.trace(bridge.name, flow)
        doc = {"flow": flow, **result}
        packet = _undecided_packet(host, bridge.name, flow) if result.get("controller") else None
        if packet is not None:
            # What the classifier would decide, and the path the connection then takes:
            # the packet-out's packet, tracked (trk,new) with its class's mark.
            decision = classify_doc(host, packet)
            doc["decision"] = decision
            doc["decided"] = self.backend.trace(bridge.name, flow, ct_next="trk,new",
                                                ct_mark=decision["mark"])
        return doc

    def audit(self, req):
        return self.backend.audit()

    # --- config ---------------------------------------------------------------------------

    def config(self, req):
        return config_doc(self._host())

    def reload(self, req):
        """Runtime.reload, as SIGHUP does: only the file the controller runs (a path
        from the client would let the API read, and echo parts of, any file)."""
        path = self.runtime.config_path
        if not path:
            raise ApiError(503, "the controller was started without a config file to re-read")
        issues = self.runtime.reload("REST")
        if issues:
            raise ApiError(400, f"{path} is invalid; the running config is kept", "config",
                           issues=[{"file": i.file, "path": i.path,
                                    "value": None if i.value is ABSENT else _jsonable(i.value),
                                    "message": i.message, "text": str(i)} for i in issues])
        return {"reloaded": path}

    # --- Ryu ---------------------------------------------------------------------------------

    def ryu_switches(self, req):
        return self.backend.ryu("switches", None)

    def _ryu(self, what, req, argument=None):
        dpid = parse_dpid(req.path["dpid"], "dpid")
        state = self.runtime.switches.get(dpid)
        if state is None or not state.connected:
            raise ApiError(404, f"no connected switch {req.path['dpid']!r}", "dpid")
        return self.backend.ryu(what, dpid, argument)

    def ryu_flow_filtered(self, req):
        return self._ryu("flow", req, req.body)

    def ryu_aggregateflow_filtered(self, req):
        return self._ryu("aggregateflow", req, req.body)

    def ryu_port_one(self, req):
        return self._ryu("port", req, _coerce("port", req.path["port"], _PORT32))


def _ryu_read(what: str):
    """The handler of GET /stats/WHAT/{dpid}: the same for every Ryu read."""
    def handler(self, req):
        return self._ryu(what, req)
    handler.__name__ = f"ryu_{what}"
    return handler


for _what in RYU_READS:
    setattr(Api, f"ryu_{_what}", _ryu_read(_what))


# --- validation ------------------------------------------------------------------------


def _coerce(name: str, value: str, schema: dict):
    if schema.get("type") == "integer":
        if not re.fullmatch(r"-?[0-9]{1,20}", value):
            raise bad(name, f"{value!r} is not an integer")
        value = int(value)
    _check_value(name, value, schema)
    return value


def _check_value(name: str, value, schema: dict) -> None:
    kind = schema.get("type")
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad(name, f"{value!r} is not an integer")
    if kind == "string" and not isinstance(value, str):
        raise bad(name, f"{value!r} is not a string")
    if "enum" in schema and value not in schema["enum"]:
        raise bad(name, f"{value!r} is not one of {', '.join(schema['enum'])}")
    if "minimum" in schema and value < schema["minimum"]:
        raise bad(name, f"{value} is below {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise bad(name, f"{value} is above {schema['maximum']}")
    if schema.get("format") == "ipv4":
        try:
            address_int(value)
        except ValueError:
            raise bad(name, f"{value!r} is not an IPv4 address") from None


def _check_object(body: dict, schema: dict) -> None:
    props = schema.get("properties", {})
    for key in body:
        if key not in props:
            raise bad(str(key), f"unknown field (expected {', '.join(props)})")
    for key in schema.get("required", ()):
        if key not in body:
            raise bad(key, "required")
    for key, value in body.items():
        _check_value(key, value, props[key])


def _port_number(state: SwitchState, text: str) -> int:
    if text in state.ports:
        return state.ports[text].number
    if text.upper() == "LOCAL":
        return 0xFFFFFFFE
    if text.isdigit() and text.isascii():
        return int(text)
    raise bad("port", f"{text!r} is no port of {state.bridge or _dpid_text(state.dpid)}")


def _touches(flow: Optional[Flow], port: int) -> bool:
    if flow is None:
        return False
    if flow.match_dict.get("in_port") == port:
        return True
    return any(isinstance(a, Output) and a.port == port
               for i in flow.instructions if isinstance(i, Apply) for a in i.actions)


_PURPOSE_CLASS = {Purpose.MANAGEMENT: "management", Purpose.PRIVACY: "privacy",
                  Purpose.WARP: "privacy", Purpose.DROP: "drop", Purpose.FORGED: "drop",
                  Purpose.BLOCKED: "drop"}


def flow_class(flow: Optional[Flow], purpose: Optional[Purpose]) -> Optional[str]:
    """The traffic class a flow carries: a class flow's (by the ct_mark it
    matches); management or privacy forwarding; drop for drops; None for the
    rest (admission, ARP, the connection tracker)."""
    if purpose is Purpose.CLASSIFIED and flow is not None:
        cls = CLASS_OF_MARK.get(flow.match_dict.get("ct_mark"))
        return cls.value if cls is not None else None
    if purpose is Purpose.REPLY:
        return TrafficClass.MANAGEMENT.value
    return _PURPOSE_CLASS.get(purpose)


def _dump_line(stat: FlowStat, names: dict) -> str:
    """As `ovs-ofctl dump-flows` prints it: the flow with duration and counters."""
    base = stat.flow.ofctl(names) if stat.flow is not None else stat.text
    counters = (f"duration={stat.duration:.3f}s, table={stat.table}, "
                f"n_packets={stat.packets}, n_bytes={stat.bytes},")
    return base.replace(f"table={stat.table},", counters, 1)


_CLASS_REACH = {
    TrafficClass.PRIVACY: "privacy goes only from a Netmaker peer to a service of the xray "
                          "client (W1)",
    TrafficClass.MANAGEMENT: "management goes only to a management container (W5)",
}


def classify_doc(host: Host, body: dict) -> dict:
    """The classifier's decision for one packet, as the CLI and the API print it."""
    proto = body["proto"]
    sport, dport = body.get("sport"), body.get("dport")
    if proto == "icmp":
        for name in ("sport", "dport"):
            if body.get(name) is not None:
                raise bad(name, "icmp has no ports")
    elif dport is None:
        raise bad("dport", f"required with --proto {proto}")
    classifier = Classifier(host)
    packet = Flow5.of(body["src"], body["dst"], proto, sport or 0, dport or 0)
    decision = classifier.decide(packet)
    zone = conntrack_zone(host, host.mesh)
    mark = next(m for m, cls in CLASS_OF_MARK.items() if cls is decision.cls)
    why = None
    if decision.rule == UNROUTABLE:
        wanted = {r.name: r.cls for r in classifier.rules}.get(decision.overruled,
                                                              classifier.default.cls)
        which = "the default" if decision.overruled == DEFAULT else f"rule {decision.overruled}"
        why = f"{which} says {wanted}, but {_CLASS_REACH[TrafficClass(wanted)]}"
    return {"packet": str(packet), "class": str(decision.cls), "rule": decision.rule,
            "overruled": decision.overruled or None, "why": why, "mark": mark,
            "commit": ",".join(a.ofctl({}) for a in commit_actions(decision, zone)),
            "path": class_path(decision.cls)}


def _undecided_packet(host: Host, bridge: str, flow: str) -> Optional[dict]:
    """The classify body of a traced IPv4 packet entering the mesh from the
    Netmaker uplink (what table 1 hands the controller); None for anything else."""
    fields = dict(part.partition("=")[::2] for part in flow.split(","))
    uplink = next((p for p in host.mesh.ports if p.role is Role.NETMAKER_UPLINK), None)
    if bridge != host.mesh.name or uplink is None or fields.get("in_port") != uplink.name:
        return None
    proto = next((p for p in ("tcp", "udp", "icmp") if p in fields), None)
    if proto is None or "nw_src" not in fields or "nw_dst" not in fields:
        return None
    body = {"src": fields["nw_src"], "dst": fields["nw_dst"], "proto": proto}
    if proto != "icmp":
        body["sport"] = int(fields.get(f"{proto}_src", 0))
        body["dport"] = int(fields.get(f"{proto}_dst", 0))
    return body


def class_path(cls: TrafficClass) -> str:
    """Where table 1 sends a connection of class `cls`, in words."""
    if cls is TrafficClass.DROP:
        return "dropped in table 1, with every later packet of the connection"
    zone = {TrafficClass.PRIVACY: "privacy ingress", TrafficClass.MANAGEMENT: "management"}[cls]
    return (f"table 1 tags it {zone} and sends it to table 2 (forward), with every later "
            "packet of the connection")


# --- trace -------------------------------------------------------------------------------

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BROADCAST = "ff:ff:ff:ff:ff:ff"


def trace_flow(host: Host, bridge_name: str, body: dict, state: Optional[SwitchState]) -> str:
    """The described packet as the flow argument of `ofproto/trace`. MACs left out
    are filled in as a sender on that port would: its own MAC; the destination
    container's MAC (on either bridge), else the bridge's gateway (uplink adapter)."""
    bridge = host.bridge(bridge_name)
    in_port = body["in_port"]
    names = {p.name for p in bridge.ports}
    live = state.ports if state is not None else {}
    if in_port != "LOCAL" and in_port not in names and in_port not in live:
        raise bad("in_port", f"{in_port!r} is no port of {bridge_name} (or LOCAL)")
    for field in ("eth_src", "eth_dst"):
        if field in body and not _MAC.match(body[field]):
            raise bad(field, f"{body[field]!r} is not a MAC address")
    proto = body.get("proto", "tcp")
    if proto in ("icmp", "arp"):
        for name in ("sport", "dport"):
            if name in body:
                raise bad(name, f"{proto} has no ports")

    def mac_of_port(name):
        sp = live.get(bridge_name if name == "LOCAL" else name)
        return own_mac(bridge, name, sp.mac if sp is not None else None)

    src_default = None
    try:
        port = bridge.port(in_port)
        if port.container is not None:
            src_default = str(port.container.address)
    except KeyError:
        pass
    src = body.get("src") or src_default
    if src is None:
        raise bad("src", f"required for a packet entering {in_port}")
    eth_src = (body.get("eth_src") or mac_of_port(in_port) or "02:00:00:00:00:01").lower()
    dst = body["dst"]
    eth_dst = body.get("eth_dst")
    if eth_dst is None:
        if proto == "arp":
            eth_dst = BROADCAST
        else:
            # A container's address is answered with its own MAC on every bridge
            # (table 3's responder), so a sender addresses the owner wherever it is.
            owner = next((p for b in host.bridges for p in b.ports if p.container is not None
                          and str(p.container.address) == dst), None)
            gateway = next((p for p in bridge.ports if p.address is not None
                            and p.role.value.endswith("uplink")), None)
            eth_dst = (owner.container.mac if owner else
                       mac_of_port(gateway.name) if gateway else None) or BROADCAST
    eth_dst = eth_dst.lower()
    parts = [f"in_port={in_port}"]
    if proto == "arp":
        parts += ["arp", f"dl_src={eth_src}", f"dl_dst={eth_dst}", "arp_op=1",
                  f"arp_spa={src}", f"arp_tpa={dst}", f"arp_sha={eth_src}",
                  "arp_tha=00:00:00:00:00:00"]
    else:
        parts += [proto, f"dl_src={eth_src}", f"dl_dst={eth_dst}", f"nw_src={src}",
                  f"nw_dst={dst}"]
        if proto in ("tcp", "udp"):
            parts += [f"{proto}_src={body.get('sport', 40000)}",
                      f"{proto}_dst={body.get('dport', 443)}"]
        else:
            parts += ["icmp_type=8", "icmp_code=0"]
    return ",".join(parts)


# --- config ---------------------------------------------------------------------------


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def config_doc(host: Host) -> dict:
    """The running config as socketnet understood it; the REST token is never shown."""
    from topology.model import host_document

    settings = {k: _jsonable(v) for k, v in dataclasses.asdict(host.settings).items()}
    settings["rest_token"] = "<redacted>" if token_of(host) else None
    c = host.classification
    return {
        **host_document(host),
        "settings": settings,
        "privacy_blocked": [str(n) for n in host.privacy_blocked],
        "classification": {
            "default": str(c.default), "idle_timeout": c.idle_timeout,
            "conntrack_zone": c.conntrack_zone,
            "seed_services": c.seed_services,
            "rules": [{"name": r.name, "class": str(r.cls), "protocol": r.protocol,
                       "src": [str(n) for n in r.src.iter_cidrs()] if r.src else None,
                       "dst": [str(n) for n in r.dst.iter_cidrs()] if r.dst else None,
                       "src_ports": [list(p) for p in r.src_ports],
                       "dst_ports": [list(p) for p in r.dst_ports]} for r in c.rules],
            "limits": dataclasses.asdict(c.limits)},
    }


# --- OpenAPI ------------------------------------------------------------------------------


def openapi() -> dict:
    """The OpenAPI 3.0 document of ROUTES."""
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["status", "message"],
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                       "field": {"type": "string", "nullable": True}}}}}
    paths: dict = {}
    for r in ROUTES:
        content = {"application/json": {"schema": r.response}}
        if r.text:
            content["text/plain"] = {"schema": {"type": "string"}}
        responses = {"200": {"description": "OK", "content": content}}
        codes = [400, 404, 503] if r.access != "open" else []
        if r.access != "open":
            codes += [401, 403]
        if r.handler == "ready":
            codes = [503]
        if r.body is not None:
            codes.append(413)
        for code in sorted(set(codes)):
            responses[str(code)] = {"description": _ERRORS.get(code, _REASONS[code]),
                                    "content": {"application/json": {"schema": error}}}
        op = {"operationId": r.handler, "summary": r.summary, "responses": responses,
              "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path",
                              "schema": p.schema,
                              **({"description": p.description} if p.description else {})}
                             for p in r.params]}
        if r.access != "open":
            op["security"] = [{"bearer": []}]
        if r.body is not None:
            op["requestBody"] = {"required": False,
                                 "content": {"application/json": {"schema": r.body}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.0.3",
            "info": {"title": "socketnet flow-debug API", "version": VERSION,
                     "description": __doc__.split("\n\n")[0]},
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http",
                                                          "scheme": "bearer"}}}}

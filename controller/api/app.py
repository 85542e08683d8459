"""The flow-debug REST API: routing, access, validation, JSON and its OpenAPI document.

A plain WSGI application over the controller's shared `Runtime` and a `Backend`
that talks to the switches (apps/rest.py gives the live one; the unit tests a
fake). Nothing here imports os-ken, so every rule below is tested without a
switch, as Faucet keeps its valve apart from its app.

    Api(runtime, backend)        the WSGI app; `Api.openapi()` its OpenAPI 3 document
    Backend                      what the app needs from the switches

The endpoints, their schemas, request validation and the OpenAPI document are
`controller/api/routes.py` (ROUTES: every endpoint, once: what the router, the
access check and the OpenAPI document are all made from); what the answers hold
is `controller/api/views.py`. This module routes, checks access, reads bodies and
writes JSON.

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

import hmac
import json
import logging
import re
import time
from typing import NamedTuple, Optional, Protocol
from urllib.parse import parse_qs

from controller.api.routes import (ApiError, PORT32, REASONS, ROUTES, RYU_READS, Route, VERSION,
                                   bad, check_object, coerce, openapi)
from controller.api.views import (classify_doc, config_doc, dpid_text, dump_line, flow_class,
                                  jsonable, port_number, token_of, touches, trace_flow,
                                  undecided_packet)
from controller.classifier import Flow5
from controller.compiler import conntrack_zone
from controller.conntrack import ConntrackError, parse_id
from controller.pipeline import purpose_of
from controller.switches import Runtime, SwitchState
from topology.config import ABSENT
from topology.model import Host

LOG = logging.getLogger("socketnet.api")
MAX_BODY = 64 * 1024


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
        start_response(f"{response.status} {REASONS.get(response.status, '')}", headers)
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
            out[name] = coerce(name, values[-1], known[name].schema)
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
        check_object(body, route.body)
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
            raise ApiError(503, f"switch {state.bridge or dpid_text(state.dpid)} is not "
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
        return {"dpid": dpid_text(state.dpid), "dpid_int": state.dpid, "bridge": state.bridge,
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
            port = port_number(state, q["port"])
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
            if port is not None and not touches(stat.flow, port):
                continue
            line = dump_line(stat, names)
            lines.append(line)
            out.append({"table": stat.table, "priority": stat.priority,
                        "cookie": f"{stat.cookie:#x}", "purpose": label, "class": cls,
                        "match": stat.flow.match_dict if stat.flow else None,
                        "packets": stat.packets, "bytes": stat.bytes,
                        "duration": stat.duration, "ofctl": line})
        if q.get("format") == "ofctl":
            return Response(200, "".join(f"{line}\n" for line in lines), "text/plain")
        return {"bridge": state.bridge, "dpid": dpid_text(state.dpid), "flows": out}

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
                                f"{host.privacy_bridge.name})") from None
        state = self.runtime.by_bridge(bridge.name)
        flow = trace_flow(host, bridge.name, body, state)
        result = self.backend.trace(bridge.name, flow)
        doc = {"flow": flow, **result}
        packet = undecided_packet(host, bridge.name, flow) if result.get("controller") else None
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
                                    "value": None if i.value is ABSENT else jsonable(i.value),
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
        return self._ryu("port", req, coerce("port", req.path["port"], PORT32))


def _ryu_read(what: str):
    """The handler of GET /stats/WHAT/{dpid}: the same for every Ryu read."""
    def handler(self, req):
        return self._ryu(what, req)
    handler.__name__ = f"ryu_{what}"
    return handler


for _what in RYU_READS:
    setattr(Api, f"ryu_{_what}", _ryu_read(_what))

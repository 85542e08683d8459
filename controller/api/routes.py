"""The flow-debug REST API's published contract: every endpoint once (ROUTES:
path, method, access, parameters, request and answer schemas), the JSON-Schema
subset requests are checked against (the same schemas the OpenAPI document
publishes), the API's error (ApiError: status, message, the field it names),
and the OpenAPI 3 document made from all of it.

Pure: no switch, no WSGI; `controller/api/app.py` routes requests by it.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

from controller.classifier import address_int
from controller.pipeline import Purpose
from topology.model import TrafficClass

VERSION = "v1"


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
PORT32 = {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF}
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
CLASSIFY_BODY = {"type": "object", "required": ["src", "dst", "proto"],
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
    "out_port": PORT32, "out_group": PORT32,
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
          body=CLASSIFY_BODY, response=_DECISION_DOC),
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
          (_DPID, Param("port", "path", PORT32))),
)

_ERRORS = {400: "Bad input; error.field names it", 401: "Missing or wrong bearer token",
           403: "No token configured for this endpoint", 404: "Unknown switch, entry or path",
           503: "A switch or Open vSwitch is unreachable, or not ready"}


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error",
            503: "Service Unavailable"}


# --- validation ------------------------------------------------------------------------


def coerce(name: str, value: str, schema: dict):
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


def check_object(body: dict, schema: dict) -> None:
    props = schema.get("properties", {})
    for key in body:
        if key not in props:
            raise bad(str(key), f"unknown field (expected {', '.join(props)})")
    for key in schema.get("required", ()):
        if key not in body:
            raise bad(key, "required")
    for key, value in body.items():
        _check_value(key, value, props[key])


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
            responses[str(code)] = {"description": _ERRORS.get(code, REASONS[code]),
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

"""The `socketnet` commands that ask a running controller, through its REST API.

    socketnet switches                   switches and their connection state
    socketnet flows [--bridge B] [--table N] [--purpose P] [--port P] [--class C]
                                         the flows a switch holds, with counters
                                         (with -c FILE: what the config would install,
                                         offline, as before)
    socketnet ports [--bridge B]         ports with roles and counters
    socketnet cache [--src A] [--dst A] [--class C] [--proto P] [--limit N]
    socketnet cache delete ID | cache flush
    socketnet trace --bridge B --in-port P --dst A [--proto P] [--src A] [--dport N] ...
    socketnet audit                      the isolation matrix on the live bridges
    socketnet classify --src A --dst B --proto P [--dport N]
                                         offline with -c FILE, else the running
                                         controller's classifier (--api)
    socketnet reload                     re-read the controller's config file (exit 2 if invalid)

Every command prints a table for people and JSON with `--json`. `--api URL`
(env SOCKETNET_API, default http://127.0.0.1:9641) and `--token` (env
SOCKETNET_TOKEN) say where and how to ask. Exit 0 done; 1 the API answered an
error or cannot be reached; audit: 1 when it found a violation; reload: 2 when
the config is invalid. controller/cli/main.py registers these commands. Also the
offline helpers the `socketnet` command shares: `load_or_exit` (a config, or
every issue on stderr and exit 2) and `print_compiled_flows` (`flows -c FILE`).
"""
from __future__ import annotations

import json
import sys

import click

from controller.api.client import DEFAULT_API, ApiClient, ApiClientError
from controller.pipeline import Purpose
from topology import config as configmod
from topology.model import Host, TrafficClass

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3  # audit: the controller or ovs-vswitchd could not be asked
_CLASSES = [c.value for c in TrafficClass]  # as the API names them
_PURPOSES = [p.label for p in Purpose] + ["foreign"]


def load_or_exit(path: str) -> Host:
    """The config's host, or every error on stderr and exit 2."""
    try:
        return configmod.load_host(path)
    except configmod.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)


def print_compiled_flows(file: str, bridge: str = None, table: int = None,
                         purpose: str = None, port: str = None, cls: str = None,
                         as_json: bool = False) -> None:
    """`socketnet flows -c FILE`: the flows socketnet would install, as ovs-ofctl
    lines (or JSON), filtered as the API filters a switch's. Port numbers are
    assigned in config order from 1, as `socketnet lab` does; on a real switch they
    come from the switch. An unknown bridge, table or port exits 2 naming it."""
    from controller.api.views import flow_class, touches
    from controller.compiler import SwitchPort, compile_bridge
    from controller.pipeline import TABLE_BY_ID, purpose_of

    host = load_or_exit(file)
    names_of = [b.name for b in host.bridges]
    if bridge and bridge not in names_of:
        _refuse("--bridge", f"{bridge!r} is not a bridge of {file} ({', '.join(names_of)})",
                as_json)
    if table is not None and table not in TABLE_BY_ID:
        _refuse("--table", f"{table} is not a table of the pipeline "
                           f"({', '.join(f'{t.id} {t.name}' for t in TABLE_BY_ID.values())})",
                as_json)
    out = {}
    for b in host.bridges:
        if bridge and b.name != bridge:
            continue
        live = {p.name: SwitchPort(i, p.name, p.mac or f"02:ff:00:00:00:{i:02x}")
                for i, p in enumerate(b.ports, start=1)}
        names = {sp.number: sp.name for sp in live.values()}
        number = None
        if port is not None:
            number = live[port].number if port in live else (
                int(port) if port.isdigit() and int(port) in names else None)
            if number is None and bridge:
                _refuse("--port", f"{port!r} is no port of {b.name}", as_json)
            if number is None:
                continue
        docs = []
        for f in compile_bridge(host, b.name, live):
            its = purpose_of(f.cookie)
            label = its.label if its else "foreign"
            carried = flow_class(f, its)
            if ((table is not None and f.table != table) or (purpose and label != purpose)
                    or (cls and carried != cls) or (number is not None
                                                    and not touches(f, number))):
                continue
            docs.append({"table": f.table, "priority": f.priority, "cookie": f"{f.cookie:#x}",
                         "purpose": label, "class": carried, "match": f.match_dict,
                         "ofctl": f.ofctl(names)})
        out[b.name] = docs
    if port is not None and not out:
        _refuse("--port", f"{port!r} is no port of {', '.join(names_of)}", as_json)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for name, docs in out.items():
        click.echo(f"# {name}")
        for d in docs:
            click.echo(d["ofctl"])


def _refuse(option: str, message: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"error": {"status": 400, "message": message,
                                         "field": option.lstrip("-")}}, indent=2))
    else:
        click.echo(f"error: {option}: {message}", err=True)
    sys.exit(EXIT_INVALID)


def api_options(f):
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option("--token", envvar="SOCKETNET_TOKEN", default=None, show_envvar=True,
                     help="Bearer token of the API.")(f)
    f = click.option("--api", "api_url", envvar="SOCKETNET_API", default=None,
                     show_envvar=True, metavar="URL",
                     help=f"The controller's REST API [default: {DEFAULT_API}].")(f)
    return f


def _client(api_url, token) -> ApiClient:
    """The API client: --api and --token, else those of the lab `socketnet --lab
    NAME` names (its host controller, from the lab's record), else the default."""
    root = click.get_current_context().find_root()
    lab = root.params.get("lab")
    if lab and not api_url:
        from topology.labs.cli import lab_api
        api_url, lab_token = lab_api(lab, root.params.get("lab_state_dir"))
        token = token or lab_token
    return ApiClient(api_url or DEFAULT_API, token)


def _ask(client: ApiClient, method: str, path: str, params=None, body=None,
         as_json: bool = False, unavailable: int = EXIT_ERROR):
    """The API's answer; on an error, its message (with --json as {"error": ...} on
    stdout) and the exit: 2 for a refused request (bad input, an unknown switch,
    port or entry), `unavailable` when the controller cannot be reached or cannot
    do it now (503), else 1."""
    try:
        return client.call(method, path, params=params, body=body)
    except ApiClientError as exc:
        issues = exc.doc.get("error", {}).get("issues", []) if exc.doc else []
        code = (EXIT_INVALID if issues or exc.status in (400, 404) else
                unavailable if exc.status in (0, 503) else EXIT_ERROR)
        if as_json:
            error = (exc.doc or {}).get("error") or {"status": exc.status,
                                                      "message": str(exc), "field": exc.field}
            _print_json({"error": error})
            sys.exit(code)
        field = f" ({exc.field})" if exc.field else ""
        click.echo(f"error: {exc}{field}", err=True)
        for issue in issues:
            click.echo(f"  {issue.get('text')}", err=True)
        sys.exit(code)


def _print_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2))


def _table(rows, headers) -> None:
    rows = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _bridges(client, bridge, as_json=False):
    if bridge:
        return [bridge]
    return [s["bridge"] or s["dpid"] for s in _ask(client, "GET", "/v1/switches",
                                                     as_json=as_json) if s["connected"]]


@click.command()
@api_options
def switches(api_url, token, as_json):
    """Switches the controller knows and their connection state."""
    doc = _ask(_client(api_url, token), "GET", "/v1/switches", as_json=as_json)
    if as_json:
        return _print_json(doc)
    _table([(s["bridge"] or "(not in config)", s["dpid"],
             "yes" if s["connected"] else "no", s["connects"], s["desired_flows"],
             s["last_plan"] or "", s["last_error"] or "") for s in doc],
           ["BRIDGE", "DPID", "CONNECTED", "CONNECTS", "FLOWS", "LAST SYNC", "ERROR"])


@click.command()
@click.option("-c", "--config", "file", type=click.Path(dir_okay=False),
              help="Offline: the flows this config would install (no controller asked).")
@click.option("--bridge", help="Only this bridge (name or datapath id).")
@click.option("--table", type=click.IntRange(0, 254))
@click.option("--purpose", type=click.Choice(_PURPOSES), help="The purpose the cookie says.")
@click.option("--port", help="Flows matching this port as in_port or outputting to it.")
@click.option("--class", "cls", type=click.Choice(_CLASSES), help="Traffic class carried.")
@api_options
def flows(file, bridge, table, purpose, port, cls, api_url, token, as_json):
    """The flows each bridge holds, with counters, as ovs-ofctl lines (or JSON).

    With -c FILE, offline: what the config would install, port numbers assigned
    in config order from 1 (on a real switch they come from the switch)."""
    if file:
        return print_compiled_flows(file, bridge, table, purpose, port, cls, as_json)
    client = _client(api_url, token)
    params = {"table": table, "purpose": purpose, "port": port, "class": cls}
    out = {}
    for name in _bridges(client, bridge, as_json):
        if as_json:
            out[name] = _ask(client, "GET", f"/v1/switches/{name}/flows", params,
                             as_json=as_json)["flows"]
        else:
            text = _ask(client, "GET", f"/v1/switches/{name}/flows",
                        {**params, "format": "ofctl"}, as_json=as_json)
            click.echo(f"# {name}")
            click.echo(text, nl=False)
    if as_json:
        _print_json(out)


@click.command()
@click.option("--bridge", help="Only this bridge (name or datapath id).")
@api_options
def ports(bridge, api_url, token, as_json):
    """Ports with their roles and counters."""
    client = _client(api_url, token)
    docs = {name: _ask(client, "GET", f"/v1/switches/{name}/ports", as_json=as_json)
            for name in _bridges(client, bridge, as_json)}
    if as_json:
        return _print_json(docs)
    for name, doc in docs.items():
        click.echo(f"# {name}")
        _table([(p["name"], p["number"] if p["number"] < 0xFFFFFF00 else "LOCAL", p["role"],
                 p["mac"], p.get("container", ""), (p["counters"] or {}).get("rx_packets"),
                 (p["counters"] or {}).get("tx_packets"),
                 (p["counters"] or {}).get("rx_dropped")) for p in doc["ports"]],
               ["PORT", "NUMBER", "ROLE", "MAC", "CONTAINER", "RX PKTS", "TX PKTS", "RX DROP"])
        if doc.get("missing"):
            click.echo(f"not on the switch: {', '.join(doc['missing'])}")


@click.group(invoke_without_command=True)
@click.option("--src", metavar="ADDRESS")
@click.option("--dst", metavar="ADDRESS")
@click.option("--class", "cls", type=click.Choice(_CLASSES + ["reply"]),
              help="Its class; reply: a management container's own connection.")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]))
@click.option("--limit", type=click.IntRange(1, 100000))
@api_options
@click.pass_context
def cache(ctx, src, dst, cls, proto, limit, api_url, token, as_json):
    """Decided connections: the mesh's conntrack zone (list; `delete ID`; `flush`)."""
    ctx.obj = (api_url, token, as_json)
    if ctx.invoked_subcommand is not None:
        return
    doc = _ask(_client(api_url, token), "GET", "/v1/cache",
               {"src": src, "dst": dst, "class": cls, "proto": proto, "limit": limit}, as_json=as_json)
    if as_json:
        return _print_json(doc)
    _table([(e["id"], e["class"] or "-", e["state"] or "-",
             "-" if e["timeout"] is None else e["timeout"])
            for e in doc["entries"]], ["ENTRY", "CLASS", "STATE", "TIMEOUT S"])
    click.echo(f"{doc['count']} connections in zone {doc['zone']}"
               + (f", {doc['counted']} decisions counted by the controller"
                  if doc.get("counted") is not None else ""))


def _cache_client(ctx, api_url, token, as_json):
    parent_api, parent_token, parent_json = ctx.obj or (None, None, False)
    return _client(api_url or parent_api, token or parent_token), as_json or parent_json


@cache.command("delete")
@click.argument("entry")
@api_options
@click.pass_context
def cache_delete(ctx, entry, api_url, token, as_json):
    """Delete one connection (its next packet is decided again)."""
    client, as_json = _cache_client(ctx, api_url, token, as_json)
    doc = _ask(client, "DELETE", f"/v1/cache/{entry}", as_json=as_json)
    _print_json(doc) if as_json else click.echo(f"deleted {doc['deleted']}")


@cache.command("flush")
@api_options
@click.pass_context
def cache_flush(ctx, api_url, token, as_json):
    """Flush the zone: every connection is decided again by its next packet (the
    userspace datapath does not pick up TCP mid-stream: established ones end)."""
    client, as_json = _cache_client(ctx, api_url, token, as_json)
    doc = _ask(client, "DELETE", "/v1/cache", as_json=as_json)
    count = "every" if doc["deleted"] is None else doc["deleted"]
    _print_json(doc) if as_json else click.echo(f"flushed {count} connections")


@click.command()
@click.option("--bridge", required=True, help="The bridge the packet enters.")
@click.option("--in-port", required=True, help="The port it enters by (name, or LOCAL).")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp", "arp"]), default="tcp",
              show_default=True)
@click.option("--src", metavar="ADDRESS", help="[default: the port's container]")
@click.option("--dst", required=True, metavar="ADDRESS")
@click.option("--sport", type=click.IntRange(0, 65535))
@click.option("--dport", type=click.IntRange(0, 65535))
@click.option("--eth-src", metavar="MAC", help="[default: the sender's own]")
@click.option("--eth-dst", metavar="MAC",
              help="[default: the destination container's MAC, else the gateway's]")
@api_options
def trace(bridge, in_port, proto, src, dst, sport, dport, eth_src, eth_dst, api_url, token,
          as_json):
    """Where a packet would go through both bridges, by the installed tables
    (ofproto/trace; no packet is sent)."""
    body = {"bridge": bridge, "in_port": in_port, "proto": proto, "src": src, "dst": dst,
            "sport": sport, "dport": dport, "eth_src": eth_src, "eth_dst": eth_dst}
    doc = _ask(_client(api_url, token), "POST", "/v1/trace",
               body={k: v for k, v in body.items() if v is not None}, as_json=as_json)
    if as_json:
        return _print_json(doc)
    from controller.explain import path_lines
    click.echo(f"packet: {doc['flow']}")
    for line in path_lines(doc):
        click.echo(f"  {line}")
    for e in doc["exits"]:
        headers = " ".join(f"{k}={v}" for k, v in e["headers"].items())
        click.echo(f"  leaves by {e['bridge']}/{e['port']}  {headers}")
    decision = doc.get("decision")
    if doc["controller"] and decision:
        click.echo(f"  undecided: the classifier would decide {decision['class']} (rule "
                   f"{decision['rule']}) and commit {decision['commit']}; then:")
        decided = doc["decided"]
        for line in path_lines(decided):
            click.echo(f"    {line}")
        click.echo(f"    verdict: {_verdict_line(decided)}")
    else:
        click.echo(f"  verdict: {_verdict_line(doc)}")


def _verdict_line(doc: dict) -> str:
    by = doc.get("dropped_by")
    if by is None:
        return doc.get("why", doc.get("verdict", ""))
    return (f"dropped on {by['bridge']} by table {by['table']} ({by['name']}), "
            f"priority {by['priority']}, purpose {by['purpose']}")


@click.command()
@api_options
def audit(api_url, token, as_json):
    """Check the isolation promise (README: N1-N9) on the live bridges. Exit 0: no
    violation; 1: a violation found; 3: it could not audit (the controller, a bridge
    or ovs-vswitchd's control socket out of reach, or packets it could not trace)."""
    doc = _ask(_client(api_url, token), "GET", "/v1/audit", as_json=as_json,
               unavailable=EXIT_UNAVAILABLE)
    if as_json:
        _print_json(doc)
    else:
        for v in doc["violations"]:
            click.echo(f"{v['rule']}: {v['packet']} entering {v['bridge']}/{v['in_port']} "
                       f"leaves by {v['exit']} ({v['why']})")
        for e in doc.get("errors", []):
            click.echo(f"error: {e['packet']} entering {e['bridge']}/{e['in_port']}: "
                       f"{e['error']}")
        click.echo(f"{doc['packets']} packets traced: "
                   + ("no violation" if doc["ok"] else
                      f"{len(doc['violations'])} violations of {', '.join(doc['rules'])}"))
    if doc["violations"]:
        sys.exit(EXIT_ERROR)
    if not doc["ok"]:  # packets it could not trace: no verdict on them
        sys.exit(EXIT_UNAVAILABLE)


@click.command()
@click.option("-c", "--config", "file", type=click.Path(dir_okay=False),
              help="Offline: classify by this config file (no controller asked).")
@click.option("--src", required=True, metavar="ADDRESS", help="Source IPv4 address.")
@click.option("--dst", required=True, metavar="ADDRESS", help="Destination IPv4 address.")
@click.option("--proto", required=True, type=click.Choice(["tcp", "udp", "icmp"]))
@click.option("--sport", type=click.IntRange(0, 65535),
              help="Source port (tcp, udp) [default: 0]; rules may match on it.")
@click.option("--dport", type=click.IntRange(0, 65535),
              help="Destination port (required with tcp and udp).")
@api_options
def classify(file, src, dst, proto, sport, dport, api_url, token, as_json):
    """Say how socketnet classifies a Netmaker-ingress connection it has no
    decision for: the class, the rule that decided, the commit that keeps it in
    the connection tracker and the path its packets then take.

    With -c FILE it reads the config (offline); without, it asks the running
    controller (--api), whose config may have been reloaded since."""
    body = {"src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport}
    body = {k: v for k, v in body.items() if v is not None}
    if file:
        from controller.api.routes import CLASSIFY_BODY, ApiError, check_object
        from controller.api.views import classify_doc
        host = load_or_exit(file)
        try:
            check_object(body, CLASSIFY_BODY)
            doc = classify_doc(host, body)
        except ApiError as exc:
            option = f"--{exc.field}" if exc.field else None
            raise click.BadParameter(exc.message.split(": ", 1)[-1], param_hint=option)
    else:
        doc = _ask(_client(api_url, token), "POST", "/v1/classify", body=body, as_json=as_json)
    if as_json:
        return _print_json(doc)
    click.echo(f"{doc['packet']}: {doc['class']}")
    click.echo(f"  decided by: {doc['rule']}")
    if doc.get("why"):
        click.echo(f"  because:    {doc['why']}")
    click.echo(f"  committed:  {doc['commit']} (ct_mark {doc['mark']})")
    click.echo(f"  then:       {doc['path']}")


@click.command()
@api_options
def reload(api_url, token, as_json):
    """Make the controller re-read its config file: validated first, a bad one
    changes nothing (exit 2 with every error); a good one is applied as a diff."""
    doc = _ask(_client(api_url, token), "POST", "/v1/reload", body={}, as_json=as_json)
    _print_json(doc) if as_json else click.echo(f"reloaded {doc['reloaded']}")


COMMANDS = (switches, flows, ports, cache, trace, audit, classify, reload)

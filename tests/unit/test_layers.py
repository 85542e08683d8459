"""The dependency rule of the README's code map: every module of the product sits
in one layer, and imports (at the top or inside a function) go only to its own
layer or those below; no two modules import each other, however indirectly; the
pure layers import no os-ken or eventlet. A new module must be given its layer
here."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("controller", "apps", "topology")

# Lowest first. A module may import its own layer's and the layers' before it.
LAYERS = (
    ("this machine", ("topology.system",)),
    ("model and config", ("topology.model", "topology.kind", "topology.document",
                          "topology.seedflows", "topology.config", "topology.config.*")),
    ("controller core (pure)", ("controller.flow", "controller.pipeline", "controller.compiler",
                                "controller.reconcile", "controller.role", "controller.sync",
                                "controller.classifier",
                                "controller.fastpath", "controller.conntrack",
                                "controller.telemetry", "controller.metric_families",
                                "controller.switches",
                                "controller.ovs_text", "controller.explain", "controller.audit",
                                "controller.vswitchd")),
    ("OpenFlow encoding", ("controller.ofmsg",)),
    ("the API", ("controller.api.routes", "controller.api.views", "controller.api.app",
                 "controller.api.client", "controller.process")),
    ("the os-ken shell", ("apps.*", "controller.runner", "controller.wire")),
    ("host provisioning", ("topology.host.*",)),
    ("labs, world, demo", ("topology.labs.*", "topology.vmlab.*")),
    ("the command line", ("controller.cli.main", "controller.cli.api_commands")),
)
PURE = 3  # the layers before OpenFlow encoding
NOT_IN_PURE = ("os_ken", "eventlet")


def modules() -> dict:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if name.endswith(".__init__"):
                if not _has_code(path):
                    continue
                name = name.removesuffix(".__init__")  # a package with code of its own
            out[name] = path
    return out


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def layer_of(module: str):
    for i, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*")
                                    and module.startswith(member[:-1])):
                return i
    return None


def imports(path: Path, known) -> list:
    """(module imported, line) for every import of `path`, anywhere in it."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                    if f"{node.module}.{a.name}" in known]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def graph() -> dict:
    mods = modules()
    return {m: {t for t, _ in imports(p, mods) if t in mods and t != m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []


def upward(mods: dict) -> list:
    found = []
    for m, path in mods.items():
        for target, line in imports(path, mods):
            if target in mods and layer_of(target) > layer_of(m):
                found.append(f"{path.name}:{line}: {m} ({LAYERS[layer_of(m)][0]}) imports "
                             f"{target} ({LAYERS[layer_of(target)][0]})")
    return found


def test_imports_go_down_the_layers_only():
    assert upward(modules()) == []


def test_the_pure_layers_import_no_os_ken():
    mods = modules()
    found = [f"{m}: {t}" for m, path in mods.items() if layer_of(m) < PURE
             for t, _ in imports(path, mods) if t.split(".")[0] in NOT_IN_PURE]
    assert found == []


def test_no_import_cycle():
    g = graph()
    cycles, index, low, stack, on = [], {}, {}, [], set()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


def test_an_upward_import_is_found_even_inside_a_function(tmp_path):
    core, shell = tmp_path / "flow.py", tmp_path / "pipeline.py"
    core.write_text("def f():\n    from apps.pipeline import PipelineApp\n")
    shell.write_text("from controller.flow import Flow\n")
    found = upward({"controller.flow": core, "apps.pipeline": shell})
    assert found == ["flow.py:2: controller.flow (controller core (pure)) imports "
                     "apps.pipeline (the os-ken shell)"]
    assert layer_of("topology.vmlab.vm") == layer_of("topology.labs.world")
    assert layer_of("controller.nosuch") is None

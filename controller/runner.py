"""Starting and stopping the controller process: the os-ken bootstrap.

os-ken 4.x ships no `osken-manager`; socketnet runs its apps itself:

1. the hub is chosen before os-ken is first imported: *eventlet*. os-ken 4.2.2's
   native hub loses an app's event loop on any handler exception, misses switch
   disconnects and cannot time out a wait; the eventlet hub has none of these
   faults and costs less per packet-in. eventlet monkey-patches the process, so
   nothing in this process uses pyroute2 (host set-up runs as its own command);
2. `app_manager` is imported before `controller` (the other order is a circular
   import in os-ken);
3. os-ken's options are set in code, listening only where asked (never also on
   the legacy port 6633);
4. the apps are instantiated with a shared `Runtime` holding the host model and
   the shared `Channels` of the switch connections (apps/connection.py owns them);
   SIGTERM or SIGINT stops them and the process exits within a second.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from typing import Optional

from topology.model import Host

LOG = logging.getLogger("socketnet")

GC_YOUNG_THRESHOLD = 20_000  # Python's default is 700

APPS = ["apps.connection", "apps.pipeline", "apps.classifier", "apps.rest", "apps.metrics"]


@dataclass(frozen=True)
class TLS:
    private_key: str
    certificate: str
    ca_certificates: Optional[str]  # given: switches must present a certificate it signed


def _boot_hub():
    if "os_ken.lib.hub" in sys.modules and os.environ.get("OSKEN_HUB_TYPE") != "eventlet":
        raise RuntimeError("os-ken was imported before socketnet chose its hub")
    os.environ["OSKEN_HUB_TYPE"] = "eventlet"
    with warnings.catch_warnings():
        # eventlet announces its deprecation on import; the choice is made
        # knowingly (see the module docstring and the README).
        warnings.simplefilter("ignore")
        import eventlet
    eventlet.monkey_patch()


def boot(listen_host: str, listen_port: int, echo_interval: float, echo_misses: int,
         tls: Optional[TLS] = None) -> None:
    """Steps 1-3: the hub, os-ken's import order, its options (this process only)."""
    _boot_hub()
    from os_ken import cfg
    from os_ken.base import app_manager  # noqa: F401  (before os_ken.controller)
    from os_ken.controller import controller  # noqa: F401  (registers the options)

    from controller import wire
    wire.install()

    conf = cfg.CONF
    conf(args=[], project="os_ken", default_config_files=[])
    conf.set_override("ofp_listen_host", listen_host)
    conf.set_override("ofp_tcp_listen_port", listen_port)
    conf.set_override("ofp_ssl_listen_port", listen_port)
    conf.set_override("echo_request_interval", echo_interval)
    conf.set_override("maximum_unreplied_echo_requests", echo_misses)
    if tls:
        conf.set_override("ctl_privkey", tls.private_key)
        conf.set_override("ctl_cert", tls.certificate)
        conf.set_override("ca_certs", tls.ca_certificates)


def run(host: Host, listen_host: str, listen_port: int, tls: Optional[TLS] = None,
        config_path: Optional[str] = None) -> int:
    """Serve OpenFlow on listen_host:listen_port until SIGTERM or SIGINT;
    SIGHUP reloads `config_path`."""
    boot(listen_host, listen_port, host.settings.echo_interval, host.settings.echo_misses, tls)
    from os_ken.base import app_manager
    from os_ken.lib import hub

    manager = app_manager.AppManager.get_instance()
    manager.load_apps(APPS)
    contexts = manager.create_contexts()
    runtime = contexts["runtime"]
    runtime.config_path = config_path
    runtime.replace_host(host)  # no app listens yet: counts the load
    threads = manager.instantiate_apps(**contexts)
    # What exists now lives as long as the process: keep the collector off it,
    # and collect the young generation less often. Full collections of a large
    # decision cache otherwise pause packet-in handling for tens of ms (bench/).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)

    stopping, reloads = [], []

    def stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: reloads.append(1))
    scheme = "ssl" if tls else "tcp"
    LOG.info("socketnet listening for OpenFlow 1.3 on %s:%s:%d (bridges %s)", scheme,
             listen_host, listen_port, ", ".join(b.name for b in host.bridges))
    while not stopping:
        hub.sleep(0.1)
        if reloads and config_path:
            reloads.clear()
            _reload(runtime)
    LOG.info("stopping on %s", signal.Signals(stopping[0]).name)
    manager.close()
    for t in threads:
        hub.kill(t)
    return 0


def _reload(runtime) -> None:
    """SIGHUP: the config file again, applied as a diff, or refused as a whole."""
    runtime.reload("SIGHUP")  # logs and counts what it did

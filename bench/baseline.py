"""The baseline controller process: bench/simple_switch.py under socketnet's runner
conditions (controller/runner.py): the eventlet hub chosen and monkey-patched
before os-ken is imported, the same os-ken, its options set in code, listening
only where asked, the seed's echo settings (2 s, 3 misses).

    python -m bench.baseline --listen 127.0.0.1:6653

bench/processes.py runs it as a child process, as it runs `socketnet run`.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from controller.runner import _boot_hub

APPS = ["bench.simple_switch"]
READY = "baseline listening"  # bench/processes.py waits for it


def run(listen_host: str, listen_port: int) -> int:
    _boot_hub()
    from os_ken import cfg
    from os_ken.base import app_manager  # noqa: F401  (before os_ken.controller)
    from os_ken.controller import controller  # noqa: F401  (registers the options)
    from os_ken.lib import hub

    conf = cfg.CONF
    conf(args=[], project="os_ken", default_config_files=[])
    conf.set_override("ofp_listen_host", listen_host)
    conf.set_override("ofp_tcp_listen_port", listen_port)
    conf.set_override("ofp_ssl_listen_port", listen_port)
    conf.set_override("echo_request_interval", 2.0)
    conf.set_override("maximum_unreplied_echo_requests", 3)
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(APPS)
    threads = manager.instantiate_apps(**manager.create_contexts())
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, _: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: stopping.append(signum))
    logging.getLogger("bench").info("%s on tcp:%s:%d", READY, listen_host, listen_port)
    while not stopping:
        hub.sleep(0.1)
    manager.close()
    for t in threads:
        hub.kill(t)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:6653", help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(host, int(port))


if __name__ == "__main__":
    sys.exit(main())

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

from controller.runner import boot

APPS = ["bench.simple_switch"]
READY = "baseline listening"  # bench/processes.py waits for it


def run(listen_host: str, listen_port: int) -> int:
    boot(listen_host, listen_port, echo_interval=2.0, echo_misses=3)
    from os_ken.base import app_manager
    from os_ken.lib import hub

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

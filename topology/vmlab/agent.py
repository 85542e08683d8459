"""The kernel-datapath VM's agent: runs commands in the guest for the host.

Runs in the guest as the child of its init, standard library only (the guest's
Python is slow; it does as little as it can). One JSON object a line each way, over
TCP (QEMU forwards a port of the host's 127.0.0.1 to it); the first line of every
connection is the run's token (a file only root can read on the host, shared with the
guest), or the connection is closed.

    {"argv": [...], "input": str|null, "timeout": s, "env": {...}}
        -> {"rc": int, "stdout": str, "stderr": str}     (rc -9 and "timeout" on expiry)
    {"poweroff": true}              -> {} and the guest powers off

Commands run from /src (the checkout) with the guest's environment, plus `env`.
"""
import argparse
import hmac
import json
import os
import socketserver
import subprocess
import sys


class Handler(socketserver.StreamRequestHandler):
    token = ""

    def handle(self):
        if not hmac.compare_digest(self.rfile.readline().strip(), self.token.encode()):
            return
        for line in self.rfile:
            reply = self.answer(json.loads(line))
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()
            if reply.get("poweroff"):
                os.sync()
                with open("/proc/sysrq-trigger", "w") as f:
                    f.write("o")

    def answer(self, req):
        env = dict(os.environ, **req.get("env", {}))
        if req.get("poweroff"):
            return {"poweroff": True}
        try:
            proc = subprocess.run(req["argv"], input=req.get("input"), capture_output=True,
                                  text=True, errors="replace", timeout=req.get("timeout"),
                                  env=env)
        except subprocess.TimeoutExpired as e:
            return {"rc": -9, "stdout": _text(e.stdout), "stderr": _text(e.stderr),
                    "timeout": True}
        except OSError as e:
            return {"rc": 127, "stdout": "", "stderr": f"{req['argv'][0]}: {e}"}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:7000")
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args()
    with open(args.token_file) as f:
        Handler.token = f.read().strip()
    host, port = args.listen.rsplit(":", 1)
    with Server((host, int(port)), Handler) as server:
        print(f"agent: listening on {args.listen}", flush=True, file=sys.stderr)
        server.serve_forever()


if __name__ == "__main__":
    main()

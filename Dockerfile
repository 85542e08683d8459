# socketnet's controller as an image, built from this repository
# (docker-compose.yml builds it). It runs `socketnet run`: it only listens on TCP
# (OpenFlow, /metrics, the REST API) and needs no privilege; run it with the host's
# network so the bridges' `tcp:127.0.0.1:6653` reaches it.
FROM python:3.11-slim-bookworm

WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY controller ./controller
COPY apps ./apps
COPY topology ./topology
COPY examples ./examples
RUN pip install --no-cache-dir . && rm -rf /src/build

USER nobody
ENTRYPOINT ["socketnet"]
CMD ["run", "-c", "/etc/socketnet/host.yaml"]

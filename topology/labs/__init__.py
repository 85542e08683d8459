"""Labs: socketnet's host, and the seed's whole world around it, built for real in
network namespaces on this machine, for tests, the demo and `socketnet lab`.

Owns private Open vSwitch instances, a host's bridges and containers in
namespaces, real WireGuard between namespaces, the world made of them (with its
record on disk and its counters), and the commands that run it. Modules, lowest
first:

- `ovs`: one private Open vSwitch (ovsdb-server, ovs-vswitchd in a netns of its own)
- `lab`: a host's two bridges and its containers in network namespaces (`Lab`)
- `wireguard`: real WireGuard between namespaces, a link or a Netmaker-like mesh
- `nodes`: each world node's controller, and node2's generated config
- `record`: a world's record, teardown and status by it alone
- `observe`: what a running world's parts saw (its counters, the VPS's log)
- `world`: the seed's whole world, built, served on and taken down (`World`)
- `demo`: `socketnet demo`
- `cli`: `socketnet lab up|status|down`

The VM lab (`topology/vmlab`) runs the same labs on a kernel with Open vSwitch's
kernel datapath.
"""

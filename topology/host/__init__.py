"""Host provisioning: making the machine itself match the config, and keeping it so.

Owns `socketnet host apply`, `status` and `watch`: the bridges, adapters, policy
routing, nftables and forwarding a real host (or a lab's) needs around socketnet.
The decisions are pure; reading the host and carrying a plan out are the I/O half.

    state.py     what the host has now: the observed state values (HostState)
    actions.py   one change to the host each, printing as its exact command
    routing.py   socketnet's routing tables and rules (RoutingIds), as wanted
    nft.py       socketnet's nftables tables and Netmaker ingress policing
    plan.py      config + state -> the actions and findings (plan, HostPlan)
    apply.py     reading the host (read_state) and carrying a plan out (apply)
    watch.py     the watcher: heal the host on netlink events, periodically and on
                 config changes; its metrics
    cli.py       the `socketnet host` click group
"""

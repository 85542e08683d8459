"""The `socketnet` command: its group and the commands that run or check
things here (`main`: run, check, host, lab, demo, ...), and the commands that
ask a running controller through its API (`api_commands`: switches, flows,
ports, cache, trace, audit, classify, reload)."""

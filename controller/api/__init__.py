"""The flow-debug REST API: its contract (`routes`: every endpoint once, its
schemas, request validation against them, the OpenAPI document), what its
answers hold (`views`, pure), the WSGI app that routes, checks access and reads
bodies (`app`), and its client for the CLI and scripts (`client`).
apps/rest.py serves it on os-ken's hub."""

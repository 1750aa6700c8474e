"""`ray start ...` for the local cluster, keeping each node on 127.0.0.1.

Ray 2.60's `ray start` replaces a node address of 127.0.0.1 with the machine's own address (the one
it would reach the internet from), and then its processes listen on every interface. Only the node
address decides that: a node whose address stays 127.0.0.1 binds its servers to the loopback. Ray's
own switch for that (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) also refuses a second node, so this runs
Ray's command line with the replacement turned off, and clients (which make the same replacement when
they connect) get RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 from .cluster.env. A real cluster needs
neither: its nodes have addresses of their own.

    python cluster/ray_node.py start --head --node-ip-address 127.0.0.1 ...
"""

from __future__ import annotations

import sys

# Private: Ray has no public switch for this (see above); tests/test_private_apis.py fails by name the
# day an upgrade moves or changes resolve_ip_for_localhost.
from ray._private import services
from ray.scripts.scripts import main


def keep_host(host: str) -> str:
    return host


if __name__ == "__main__":
    if not callable(getattr(services, "resolve_ip_for_localhost", None)):
        sys.exit("error: this Ray has no services.resolve_ip_for_localhost; check cluster/ray_node.py against it")
    services.resolve_ip_for_localhost = keep_host
    sys.argv[0] = "ray"
    main()

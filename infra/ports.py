"""Free-port discovery and port checks for services bound to 127.0.0.1.

Both services take their port on the command line, so we pick a free one first; there is a
small window in which another process could take it, and the caller reports that as a start
failure with the service log rather than retrying blindly.
"""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """Return a port the kernel considers free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it ourselves.

    SO_REUSEADDR, as Postgres and Tansu set it, so TIME_WAIT leftovers of a service we just
    stopped do not count as "taken" (a restart must get its old port back).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not port_accepts(port, host)


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

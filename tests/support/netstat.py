"""Which addresses listen on a TCP port, read from the kernel (``/proc/net/tcp`` and ``tcp6``).

Why the kernel tables rather than the process's own word: a server that says "127.0.0.1" in its
banner but binds 0.0.0.0 is exactly the bug a security test must catch, whichever process owns it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

LISTEN = "0A"


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    # the kernel prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_addresses(port: int) -> set[str]:
    """Every local address with a socket in LISTEN state on ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_ip, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(_address(hex_ip))
    return found


def loopback_only(port: int) -> bool:
    """True when something listens on ``port`` and only on loopback addresses."""
    found = listening_addresses(port)
    return bool(found) and all(ipaddress.ip_address(a).is_loopback for a in found)

"""The node secret: the key that signs what sipdisp hands out and must
recognise later (Record-Route signatures). It has to survive a restart, so
dialogs set up before it still work, and be the same on every node of a
cluster, so any node accepts what another signed."""

import os
import secrets

from sipdisp.logs import Logger

log = Logger()


def load_node_secret(value, path):
    """The secret as bytes: ``value`` (proxy.secret) when set, else the
    contents of ``path`` (proxy.secret_file), created with 32 random bytes
    (hex, mode 0600) on first use."""
    if value:
        return value.encode("utf-8")
    try:
        with open(path, "rb") as f:
            data = f.read().strip()
        if data:
            return data
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    data = secrets.token_hex(32).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data + b"\n")
    log.info("generated the node secret in {path}; copy it to every node of a cluster",
             path=path)
    return data

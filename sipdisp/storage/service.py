"""
The storage as a Twisted service, for the lead's service tree.
"""

from twisted.application import service


class StorageService(service.Service):
    """Starts a :class:`~sipdisp.storage.core.Storage` with the service tree
    and stops it (flushing what it can) with it."""

    name = "storage"

    def __init__(self, storage):
        self.storage = storage

    def startService(self):
        super().startService()
        # start() never fails for an outage; the storage retries on its own
        self.storage.start()

    def stopService(self):
        super().stopService()
        return self.storage.stop()

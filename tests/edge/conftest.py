"""Fixtures shared by the edge tests."""

import pytest
from twisted.logger import globalLogPublisher


@pytest.fixture
def logged():
    """Every log event emitted while the test runs."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)

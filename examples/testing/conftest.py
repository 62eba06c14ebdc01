"""The one fixture the stoker.testing plugin needs from a project: its app."""

from __future__ import annotations

import pytest
import shop

from stoker import Stoker


@pytest.fixture
def stoker_app() -> Stoker:
    return shop.app

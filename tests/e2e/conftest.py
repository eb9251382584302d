"""The end-to-end fixtures; the helpers they and the tests share are in `e2e_helpers`."""

from __future__ import annotations

import pytest
from e2e_helpers import Server, free_port


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    srv = Server(root, free_port())
    srv.start()
    yield srv
    srv.stop()

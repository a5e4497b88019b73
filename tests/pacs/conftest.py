"""Fixtures for the PACS tests: a private Orthanc per test, a tiny model, phantom studies."""

from __future__ import annotations

import pytest

from tests.pacs.orthanc import DICOMWEB_PLUGIN, ORTHANC, SKIP_REASON, OrthancServer


@pytest.fixture
def orthanc(tmp_path):
    """A running Orthanc on free localhost ports with an empty temporary store; stopped after the test."""
    if ORTHANC is None or DICOMWEB_PLUGIN is None:
        pytest.skip(SKIP_REASON)
    server = OrthancServer(tmp_path / "orthanc").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.infer.helpers import make_model

    return make_model(tmp_path_factory.mktemp("pacs-model") / "model")

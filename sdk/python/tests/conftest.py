"""Fixtures for the SDK tests. They run against a real, running magsd:
``MAGS_API_URL`` and ``MAGS_API_TOKEN`` must point at it (the Rust test
``crates/mags-e2e/tests/sdk_python.rs`` starts one and runs pytest)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import mags

#: Long enough for a job under TCG on a busy machine.
WAIT = 300


def pytest_configure(config: pytest.Config) -> None:
    missing = [k for k in ("MAGS_API_URL", "MAGS_API_TOKEN") if not os.environ.get(k)]
    if missing:
        raise pytest.UsageError(
            f"{', '.join(missing)} not set: these tests need a running magsd. Run them with "
            "`cargo test -p mags-e2e --test sdk_python`, or start `magsd serve` and export "
            "MAGS_API_URL and MAGS_API_TOKEN."
        )
    here = Path(__file__).resolve().parents[1] / "src" / "mags"
    if Path(mags.__file__).resolve().parent != here:
        raise pytest.UsageError(
            f"imported mags from {mags.__file__}, not from this checkout ({here}): "
            "run `eval \"$(scripts/test-python-sdk)\"` and use $MAGS_TEST_SDK_PYTHON"
        )


@pytest.fixture
def m():
    with mags.Mags() as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A fresh name, so tests sharing one server never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


def messages(result, source=None):
    """The log lines of a ``run_and_wait`` result (of one source)."""
    return [
        e["message"] for e in result["logs"] if source is None or e.get("source") == source
    ]

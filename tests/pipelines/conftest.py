"""Fixtures of the adapter tests; the cases themselves are in `adapter_cases`."""

from typing import Any

import pytest
from adapter_cases import FAMILIES, Family, pipe_of


@pytest.fixture(scope="session")
def preset_pipes() -> dict[str, Any]:
    """Preset pipelines built on first use and shared (fp32, CPU); tests leave them clean."""
    return {}


@pytest.fixture(params=list(FAMILIES))
def family(request) -> Family:
    return FAMILIES[request.param]


@pytest.fixture
def pipe(family: Family, preset_pipes: dict[str, Any]):
    """The family's preset pipeline (fp32, CPU), built once per session."""
    return pipe_of(preset_pipes, family)

"""Shared fixtures: the real development data (skips with a message where absent) and a small
synthetic dataset generated once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils import paths

SHARED_MISSING = (
    "../shared/data is absent (a fresh clone): real-data tests need the HAM10000 / ISIC 2019 "
    "development copy beside the repository; see data/README.md"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only real data); skips the test where it is absent."""
    root = paths.shared_data_dir()
    if root is None:
        pytest.skip(SHARED_MISSING)
    return root


@pytest.fixture(scope="session")
def ham_real(shared_data: Path) -> Path:
    return shared_data / "HAM10000"


@pytest.fixture(scope="session")
def isic2019_real(shared_data: Path) -> Path:
    return shared_data / "ISIC_2019_subset"


@pytest.fixture(scope="session")
def synthetic_ham(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-image synthetic HAM10000-layout dataset (read-only by convention: copy to modify)."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "HAM10000"
    synthetic.generate_ham10000(root, n_images=300, seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_isic2019(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-image synthetic ISIC 2019-layout dataset."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "ISIC_2019"
    synthetic.generate_isic2019(root, n_images=120, seed=0)
    return root

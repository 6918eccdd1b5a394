import os
from pathlib import Path

import pytest

from guide.config import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MINITOUR = HERE / "data" / "minitour"


def dev_data() -> Path:
    return Path(os.environ.get("GUIDE_DEV_DATA") or ROOT.parent / "shared" / "data" / "dev")


@pytest.fixture
def dev_dir() -> Path:
    d = dev_data()
    if not d.is_dir():
        pytest.skip(f"dev data not found at {d} (set GUIDE_DEV_DATA to the shared/data/dev folder)")
    return d


@pytest.fixture
def tiny_config(tmp_path):
    """Weightless models, the test tours, and a private index folder."""
    return load_config("tiny", tours_dir=HERE / "data", index_dir=tmp_path / "indexes", cache_dir=tmp_path / "cache")


@pytest.fixture
def tiny_guide(tiny_config):
    from guide.pipeline import Guide

    return Guide.load(tiny_config, progress=False)


@pytest.fixture(scope="session")
def offline_guide(tmp_path_factory):
    """The real offline models (e5-small + Qwen2.5 0.5B GGUF) over the project's own tours."""
    from guide.pipeline import Guide

    # hermetic: the base model, whatever adapter `make finetune` may have published on this machine
    config = load_config("offline", index_dir=tmp_path_factory.mktemp("indexes"), adapter="none")
    return Guide.load(config, progress=False)

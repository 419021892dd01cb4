import os
import sys
from pathlib import Path

# Tests never touch the network: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
# One folder per transformers version, so that CI's legs (newest and lowest versions) each find their own.
UPSTREAM_DIR = Path(__file__).resolve().parent / ".upstream" / f"transformers-{transformers.__version__}"

# One thread in every test process, with or without pytest-xdist (which runs one worker per core), so that
# `pytest` and `pytest -p no:xdist` compute the same numbers. Subprocesses set their own threads.
torch.set_num_threads(1)


def import_upstream_tests():
    """Put transformers' own common tests (fetched by tests/fetch_transformers_tests.py) on sys.path."""
    if not (UPSTREAM_DIR / "transformers_tests").is_dir():
        raise RuntimeError(
            "transformers' common tests are missing: run `python tests/fetch_transformers_tests.py` first "
            "(the README's test command does)."
        )
    for path in (UPSTREAM_DIR, UPSTREAM_DIR / "utils"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield

import os
import re
import sys
from collections import Counter
from pathlib import Path

# Tests never touch the network: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
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


# The packages tests/fetch_transformers_tests.py unpacks upstream common tests into, and whose tests they are.
UPSTREAM_PACKAGES = {"transformers_tests": "transformers", "peft_tests": "peft"}
OUTCOMES = ("ran", "skipped by the mixins' own conditions", "skipped by MedVL")
UPSTREAM_COUNTS = Counter()


def _defined_by_medvl(function) -> bool:
    """Whether a MedVL test file wrote this test method or a layer around it (an override, a skip), looking through
    the wrappers transformers' mixins put around every test (hub_retry)."""
    while function is not None:
        if getattr(function, "skipped_by_medvl", False):  # set by model_common_testing.skip_generated
            return True
        code = getattr(function, "__code__", None)
        if code is not None and Path(code.co_filename).parent == TESTS_DIR:
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def _upstream_test_owner(item) -> tuple[str, str] | None:
    """(library, "upstream") for a test one of the library's mixins defines and MedVL leaves as it is, (library,
    "project") for one MedVL redefines (an override, or a skip set on it); None for MedVL's own tests."""
    cls = getattr(item, "cls", None)
    if cls is None:
        return None
    name = getattr(item, "originalname", None) or item.name
    library = next((UPSTREAM_PACKAGES[klass.__module__.split(".")[0]] for klass in cls.__mro__
                    if name in vars(klass) and klass.__module__.split(".")[0] in UPSTREAM_PACKAGES), None)
    if library is None:
        return None
    return library, "project" if _defined_by_medvl(getattr(cls, name, None)) else "upstream"


def pytest_collection_modifyitems(items):
    # Carried in user_properties so that each report, from an xdist worker too, says whose test it is.
    for item in items:
        owner = _upstream_test_owner(item)
        if owner:
            item.user_properties.append(("upstream_test", owner))


def pytest_runtest_logreport(report):
    owner = dict(report.user_properties).get("upstream_test")
    if owner is None or isinstance(report, pytest.SubtestReport):  # a test's subtests are parts of one test
        return
    library, defined_by = owner
    if report.skipped:
        UPSTREAM_COUNTS[library, OUTCOMES[1] if defined_by == "upstream" else OUTCOMES[2]] += 1
    elif report.when == "call" or (report.when == "setup" and report.failed):
        UPSTREAM_COUNTS[library, OUTCOMES[0]] += 1


def _empty_stand_ins() -> list[str]:
    """transformers' mixins that fetch_transformers_tests.py writes as empty classes: their tests exist nowhere."""
    from fetch_transformers_tests import STAND_INS

    return [f"{name} ({path})" for path, text in STAND_INS.items()
            for name in re.findall(r"^class (\w+):\n    pass$", text, flags=re.MULTILINE)]


def pytest_terminal_summary(terminalreporter):
    """How many upstream common tests ran and how many were skipped by whom, so that a stand-in or a broad skip
    shows in every run's summary."""
    libraries = sorted({library for library, _ in UPSTREAM_COUNTS})
    if not libraries:
        return
    terminalreporter.write_sep("=", "upstream common tests")
    for library in libraries:
        counts = ", ".join(f"{UPSTREAM_COUNTS[library, outcome]} {outcome}" for outcome in OUTCOMES)
        terminalreporter.write_line(f"{library} {sys.modules[library].__version__}: {counts}")
    if "transformers" in libraries:
        terminalreporter.write_line("not in transformers' source distribution, so empty stand-ins with no tests: "
                                    + ", ".join(_empty_stand_ins())
                                    + "; MedVL's own tests cover generation (tests/test_model_generation*.py)")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield

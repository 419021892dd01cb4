"""Fetch the upstream common tests MedVL runs, from the source distributions of the *installed* versions:
transformers' (ModelTesterMixin, ConfigTester, ProcessorTesterMixin, ImageProcessingTestMixin) and peft's
(PeftCommonTester).

They are unpacked under ``tests/.upstream/transformers-<version>/`` as the package ``transformers_tests`` and under
``tests/.upstream/peft-<version>/`` as the package ``peft_tests`` (never committed) so MedVL's tests can run them.
Run once after installing; it is a no-op when the matching versions are already there.
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import peft
import transformers

UPSTREAM_ROOT = Path(__file__).resolve().parent / ".upstream"
UPSTREAM_DIR = UPSTREAM_ROOT / f"transformers-{transformers.__version__}"
PACKAGE_NAME = "transformers_tests"
PEFT_UPSTREAM_DIR = UPSTREAM_ROOT / f"peft-{peft.__version__}"
PEFT_PACKAGE_NAME = "peft_tests"
# peft's testing_common.py imports diffusers for its Stable Diffusion tests only (an isinstance check elsewhere).
# Written beside the package and put at the end of sys.path, so an installed diffusers still wins.
PEFT_STAND_INS = {"stand_ins/diffusers/__init__.py": "class StableDiffusionPipeline:\n    pass\n"}

# The sdist carries tests/*.py but not the sub-folders and repo-level helpers those files import.
# Minimal stand-ins, written here rather than committed: the export and generation mixins are
# left empty (MedVL runs its own generate() tests), and the common config kwargs are a set of
# PreTrainedConfig attributes with non-default values, which ConfigTester checks are kept.
STAND_INS = {
    "__init__.py": "",
    "exporters/__init__.py": "",
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/__init__.py": "",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        "    'return_dict': False,\n"
        "    'output_hidden_states': True,\n"
        "    'dtype': 'float16',\n"
        "    'chunk_size_feed_forward': 5,\n"
        "    'id2label': {0: 'label'},\n"
        "    'label2id': {'label': '0'},\n"
        "    'problem_type': 'regression',\n"
        "}\n"
    ),
}
HELPER_STAND_INS = {"fetch_hub_objects_for_ci.py": "def url_to_local_path(url):\n    return url\n"}


def download_sdist(name: str, version: str, tmp: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"{name}=={version}", "-d", tmp],
        check=True,
    )
    (sdist,) = Path(tmp).glob(f"{name}-*.tar.gz")
    return sdist


def fetch(dest: Path = UPSTREAM_DIR) -> Path:
    version = transformers.__version__
    marker = dest / f"transformers-{version}.ok"
    if marker.exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist("transformers", version, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        prefix = f"transformers-{version}/"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name[len(prefix):] if member.name.startswith(prefix) else None
                # tests/ becomes the package; utils/ holds helper modules the tests import by bare name.
                if name and name.startswith("tests/"):
                    target = dest / PACKAGE_NAME / name[len("tests/"):]
                elif name and name.startswith("utils/") and name.endswith(".py") and name.count("/") == 1:
                    target = dest / "utils" / name[len("utils/"):]
                else:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    for relative, text in STAND_INS.items():
        target = dest / PACKAGE_NAME / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(text)
    for name, text in HELPER_STAND_INS.items():
        target = dest / "utils" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(text)
    marker.touch()
    return dest


def fetch_peft(dest: Path = PEFT_UPSTREAM_DIR) -> Path:
    """peft's tests/testing_common.py (PeftCommonTester) and the testing_utils.py it imports, as `peft_tests`."""
    version = peft.__version__
    marker = dest / f"peft-{version}.ok"
    if marker.exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist("peft", version, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        package = dest / PEFT_PACKAGE_NAME
        package.mkdir(parents=True)
        with tarfile.open(sdist) as tar:
            for name in ("testing_common.py", "testing_utils.py"):
                with tar.extractfile(f"peft-{version}/tests/{name}") as src, open(package / name, "wb") as out:
                    shutil.copyfileobj(src, out)
    (package / "__init__.py").write_text("")
    for relative, text in PEFT_STAND_INS.items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    marker.touch()
    return dest


if __name__ == "__main__":
    print(f"transformers {transformers.__version__} common tests in {fetch()}")
    print(f"peft {peft.__version__} common tests in {fetch_peft()}")

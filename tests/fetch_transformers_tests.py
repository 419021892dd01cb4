"""Fetch transformers' own common tests (ModelTesterMixin, ConfigTester, ProcessorTesterMixin,
ImageProcessingTestMixin) from the source distribution of the *installed* transformers version.

They are unpacked under ``tests/.upstream/transformers-<version>/`` as the package
``transformers_tests`` (never committed) so MedVL's tests can run them. Run once after installing; it is a no-op when the
matching version is already there.
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

UPSTREAM_DIR = Path(__file__).resolve().parent / ".upstream" / f"transformers-{transformers.__version__}"
PACKAGE_NAME = "transformers_tests"

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


def fetch(dest: Path = UPSTREAM_DIR) -> Path:
    version = transformers.__version__
    marker = dest / f"transformers-{version}.ok"
    if marker.exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"transformers=={version}", "-d", tmp],
            check=True,
        )
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
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


if __name__ == "__main__":
    print(f"transformers {transformers.__version__} common tests in {fetch()}")

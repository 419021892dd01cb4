"""What every benchmark records beside its figures: the machine, the library versions, the load average over
the run and the date, so that `summarize.py` can show each figure with what it was measured on; and the JSON
writing they share.

Timings on a shared machine move with its load, and ratios with the libraries compared: a figure without
these is not comparable with another.
"""

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

# Modules whose import name is not the name users install them by.
PACKAGE_NAMES = {"cv2": "opencv", "PIL": "pillow"}


def versions(*modules) -> dict:
    return {PACKAGE_NAMES.get(module.__name__, module.__name__): module.__version__ for module in modules}


def cpu_model() -> str:
    # platform.processor() is the architecture ("x86_64") on Linux; the model is in /proc/cpuinfo.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    """GPU names from nvidia-smi (no torch import: not every benchmark uses torch)."""
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def machine(*modules, load_at_start: float, cores_key: str = "cpu_count") -> dict:
    """The machine record, taken at the end of a run that started at load average `load_at_start`.

    `cores_key`: the name this benchmark's earlier results gave the core count ("cpu_count" or "cpus"),
    kept so that old and new results read alike.
    """
    return {
        "platform": platform.platform(),
        cores_key: os.cpu_count(),
        "cpu_model": cpu_model(),
        "gpus": gpus(),
        "python": platform.python_version(),
        **versions(*modules),
        "load_average_1min_start_end": [load_at_start, load_average()],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def write_json(path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")

"""Stages that finish or leave nothing: the bookkeeping behind `medvl demo`.

Each stage writes into its own folder under the demo's output folder. `demo_state.json` records the settings and
each finished stage (with its time); a stage's folder counts only once it is recorded. A stage that stops half-way
(an error, Ctrl-C, a killed process) has its folder removed, at once or on the next run, so no half-written
checkpoint or export is ever left to be loaded; the next run continues with the first stage not recorded.
"""

import json
import shutil
import time
from pathlib import Path

STATE_FILE = "demo_state.json"


class StageRecord:
    def __init__(self, out: Path, settings: dict, stage_names: tuple, root_files: dict | None = None,
                 restart: bool = False):
        """`root_files`: a stage's files outside its folder (at the top of `out`), removed with it. `restart`:
        forget what `out` holds (whatever its settings) and remove every stage's outputs."""
        self.out, self.settings, self.stage_names = Path(out), settings, stage_names
        self.root_files = root_files or {}
        self.path = self.out / STATE_FILE
        self.state = {"settings": settings, "finished": {}}
        if restart:
            self.forget_from(stage_names[0])
        elif self.path.is_file():
            recorded = json.loads(self.path.read_text())
            if recorded.get("settings") != settings:
                changed = sorted(key for key in {*settings, *recorded.get("settings", {})}
                                 if settings.get(key) != recorded.get("settings", {}).get(key))
                raise ValueError(f"{self.out} holds a demo run with other settings ({', '.join(changed)}): give "
                                 "another --out, the same settings, or --from data to start again")
            self.state = recorded

    def finished(self, name: str) -> bool:
        return name in self.state["finished"]

    def seconds(self, name: str) -> float:
        return self.state["finished"][name]["seconds"]

    def forget_from(self, name: str) -> None:
        """Forget `name` and every later stage, and remove their folders."""
        for later in self.stage_names[self.stage_names.index(name):]:
            self.state["finished"].pop(later, None)
            self._remove_outputs(later)
        self._write()

    def remove_unfinished(self) -> list:
        """The folders of stages not recorded as finished (left by a run that was stopped), removed."""
        removed = [name for name in self.stage_names if not self.finished(name) and self._outputs_exist(name)]
        for name in removed:
            self._remove_outputs(name)
        return removed

    def run(self, name: str, work) -> float:
        """Run `work(folder)` for stage `name`; record it when it returns, remove its folder when it does not."""
        folder = self.out / name
        self._remove_outputs(name)
        folder.mkdir(parents=True)
        started = time.time()
        try:
            work(folder)
        except BaseException:
            self._remove_outputs(name)
            raise
        seconds = time.time() - started
        self.state["finished"][name] = {"seconds": round(seconds, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._write()
        return seconds

    def _outputs(self, name: str) -> list:
        return [self.out / name, *(self.out / file for file in self.root_files.get(name, ()))]

    def _outputs_exist(self, name: str) -> bool:
        return any(path.exists() for path in self._outputs(name))

    def _remove_outputs(self, name: str) -> None:
        for path in self._outputs(name):
            remove(path)

    def _write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.state, indent=2))
        partial.replace(self.path)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


__all__ = ["STATE_FILE", "StageRecord", "remove"]

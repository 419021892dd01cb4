"""`medvl demo`'s bookkeeping: a stage counts only once finished, a stopped one leaves nothing, a re-run continues
after the last finished stage, `--from` re-runs a stage and every later one, and settings never mix."""

import json
import subprocess
import sys

import pytest

from train.demo_runner import STATE_FILE, StageRecord
from train.demo_scales import SCALES, choose_scale

NAMES = ("first", "second", "third")
SETTINGS = {"scale": "quick", "seed": 0}


def write_file(folder):
    (folder / "checkpoint").write_text("weights")


def test_a_finished_stage_is_recorded_and_kept_on_the_next_run(tmp_path):
    record = StageRecord(tmp_path, SETTINGS, NAMES)
    record.run("first", write_file)
    again = StageRecord(tmp_path, SETTINGS, NAMES)
    assert again.finished("first") and not again.finished("second")
    assert again.remove_unfinished() == []
    assert (tmp_path / "first" / "checkpoint").read_text() == "weights"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_stage_that_stops_half_way_leaves_no_folder_and_is_not_recorded(tmp_path, stop):
    record = StageRecord(tmp_path, SETTINGS, NAMES, root_files={"second": ("report.html",)})
    record.run("first", write_file)

    def half_written(folder):
        write_file(folder)
        (tmp_path / "report.html").write_text("<html>")
        raise stop("stopped")

    with pytest.raises(stop):
        record.run("second", half_written)
    assert not (tmp_path / "second").exists() and not (tmp_path / "report.html").exists()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert list(state["finished"]) == ["first"]


def test_folders_left_by_a_killed_run_are_removed_before_the_next(tmp_path):
    record = StageRecord(tmp_path, SETTINGS, NAMES, root_files={"third": ("report.md",)})
    record.run("first", write_file)
    (tmp_path / "second").mkdir()  # a process killed during "second" (SIGKILL: no clean-up ran)
    (tmp_path / "second" / "checkpoint-10").mkdir()
    (tmp_path / "report.md").write_text("half")
    again = StageRecord(tmp_path, SETTINGS, NAMES, root_files={"third": ("report.md",)})
    assert again.remove_unfinished() == ["second", "third"]
    assert not (tmp_path / "second").exists() and not (tmp_path / "report.md").exists()
    assert (tmp_path / "first" / "checkpoint").is_file()


def test_from_forgets_the_stage_and_every_later_one(tmp_path):
    record = StageRecord(tmp_path, SETTINGS, NAMES)
    for name in NAMES:
        record.run(name, write_file)
    record.forget_from("second")
    again = StageRecord(tmp_path, SETTINGS, NAMES)
    assert [again.finished(name) for name in NAMES] == [True, False, False]
    assert (tmp_path / "first").is_dir() and not (tmp_path / "second").exists() and not (tmp_path / "third").exists()


def test_other_settings_in_the_same_folder_are_refused_with_the_keys_that_differ(tmp_path):
    StageRecord(tmp_path, SETTINGS, NAMES).run("first", write_file)
    with pytest.raises(ValueError, match=r"other settings \(scale\)"):
        StageRecord(tmp_path, {**SETTINGS, "scale": "tiny"}, NAMES)
    restarted = StageRecord(tmp_path, {**SETTINGS, "scale": "tiny"}, NAMES, restart=True)
    assert not restarted.finished("first") and not (tmp_path / "first").exists()
    assert json.loads((tmp_path / STATE_FILE).read_text())["settings"]["scale"] == "tiny"


def test_scales():
    assert choose_scale("tiny", quick=True) == ("quick", SCALES["quick"])
    assert choose_scale("small", quick=False)[1].image_size > SCALES["tiny"].image_size
    with pytest.raises(ValueError, match="two sizes"):
        choose_scale("base", quick=True)
    quick, default = SCALES["quick"], SCALES["tiny"]
    assert quick.pretrain_steps < default.pretrain_steps and quick.studies < default.studies


def run_medvl(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "train.cli", *arguments], capture_output=True, text=True, cwd=cwd)


def test_demo_user_errors_are_one_line_with_status_2(tmp_path):
    completed = run_medvl("demo", "--quick", "--scale", "base", "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == ["error: --quick and --scale base ask for two sizes: give one"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / STATE_FILE).write_text(json.dumps({"settings": {"scale": "tiny"}, "finished": {}}))
    completed = run_medvl("demo", "--quick", "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert completed.returncode == 2 and "other settings" in completed.stderr, completed.stderr
    assert "--from" in completed.stderr

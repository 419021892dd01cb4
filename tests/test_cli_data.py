"""`medvl data synth` and `medvl data preview`."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from train.cli import main


def test_synth_writes_every_layout_and_preview_reads_it(tmp_path, capsys):
    out = tmp_path / "synthcxr"
    assert main(["data", "synth", "--out", str(out), "--n", "6", "--size", "48", "--seed", "1"]) == 0
    assert (out / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv").is_file()
    assert (out / "openi" / "ecgen-radiology" / "1.xml").is_file()
    assert (out / "vqa-rad" / "VQA_RAD Dataset Public.json").is_file()
    assert "mimic-cxr-jpg" in capsys.readouterr().out

    sheet_path = tmp_path / "sheet.png"
    assert (
        main(
            [
                "data",
                "preview",
                "--data",
                str(out),
                "--out",
                str(sheet_path),
                "--n",
                "4",
                "--columns",
                "2",
                "--tile",
                "64",
            ]
        )
        == 0
    )
    sheet = Image.open(sheet_path)
    assert sheet.size[0] > 2 * 64 and sheet.size[1] >= 2 * 64


def test_preview_generates_on_the_fly_with_a_mix(tmp_path):
    sheet_path = tmp_path / "sheet.png"
    args = [
        "data",
        "preview",
        "--out",
        str(sheet_path),
        "--n",
        "3",
        "--size",
        "32",
        "--columns",
        "3",
        "--tile",
        "64",
        "--mix",
        "pneumothorax=1",
    ]
    assert main(args) == 0
    sheet = np.asarray(Image.open(sheet_path).convert("RGB")).astype(int)
    # Three cells in a row, each a 64 px tile then (8 px on) a text column, 1.25 tiles wide with its 8 px margins.
    cell_width = 8 + 64 + 80 + 8
    assert sheet.shape == (64 + 16, 3 * cell_width, 3)
    for cell in range(3):
        text_column = sheet[:, cell * cell_width + 8 + 64 + 8 : (cell + 1) * cell_width]
        red, green, blue = text_column[..., 0], text_column[..., 1], text_column[..., 2]
        # The title is yellow (blue far below red); the report's lines are light grey.
        title = (red > 200) & (red - blue > 100)
        report = (red > 150) & (abs(red - green) < 12) & (abs(green - blue) < 12)
        assert title.sum() > 20, f"cell {cell}: no title"
        assert report.sum() > 50, f"cell {cell}: no report text drawn"
        assert report.any(axis=1).sum() >= 2 * 6, f"cell {cell}: the report's lines fill a few rows of glyphs"


def test_bad_mix_is_named(tmp_path, capsys):
    for mix, message in (("flu=1", "unknown kinds ['flu']"), ("normal=0", "the weights sum to 0")):
        with pytest.raises(SystemExit) as stopped:
            main(["data", "preview", "--out", str(tmp_path / "x.png"), "--n", "1", "--size", "32", "--mix", mix])
        assert stopped.value.code == 2 and message in str(stopped.value)
        assert capsys.readouterr().err.splitlines() == [f"error: {stopped.value}"]


def study_splits(folder) -> dict:
    table = folder / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-split.csv"
    rows = [line.split(",") for line in table.read_text().split()[1:]]
    return {row[1]: row[3] for row in rows}


def test_split_shares_move_studies_between_splits_and_nothing_else(tmp_path):
    main(["data", "synth", "--out", str(tmp_path / "default"), "--n", "200", "--size", "16", "--layouts",
          "mimic-cxr-jpg"])
    main(["data", "synth", "--out", str(tmp_path / "wide"), "--n", "200", "--size", "16", "--layouts",
          "mimic-cxr-jpg", "--split", "train=0.6,validate=0.1,test=0.3"])
    default, wide = study_splits(tmp_path / "default"), study_splits(tmp_path / "wide")
    assert default.keys() == wide.keys()
    shares = {name: sum(split == name for split in wide.values()) / 200 for name in ("train", "validate", "test")}
    assert abs(shares["test"] - 0.3) < 0.1 and abs(shares["train"] - 0.6) < 0.1, shares
    # One draw per study: a test study under the default shares (draw >= 0.95) stays a test study.
    assert all(wide[study] == "test" for study, split in default.items() if split == "test")
    truth = [(tmp_path / name / "synthcxr.jsonl").read_text().splitlines() for name in ("default", "wide")]
    strip = [[line.replace('"split": "test"', "").replace('"split": "train"', "").replace('"split": "validate"', "")
              for line in lines] for lines in truth]
    assert strip[0] == strip[1]  # the same studies, reports and labels


@pytest.mark.parametrize("split, message", [
    ("train=0.6,test=0.4", "give each of ['train', 'validate', 'test'] once"),
    ("train=0.5,validate=0.1,test=0.3", "summing to 1"),
    ("train", "items look like split=share"),
])
def test_bad_split_is_named(tmp_path, capsys, split, message):
    with pytest.raises(SystemExit) as stopped:
        main(["data", "synth", "--out", str(tmp_path), "--n", "2", "--size", "16", "--split", split])
    assert stopped.value.code == 2 and message in str(stopped.value) and split in str(stopped.value)


def test_console_script_runs_synth(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.cli",
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--n",
            "2",
            "--size",
            "32",
            "--layouts",
            "vqa-rad",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "vqa-rad" / "VQA_RAD Image Folder" / "synpic100001.jpg").is_file()
    assert not (tmp_path / "mimic-cxr-jpg").exists()

"""benchmarks/summarize.py: the README's summary table from results JSON in the benchmark scripts' format."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import summarize  # noqa: E402

# As bench_text_pipeline.py writes it (with the shared machine record), trimmed to what the table reads.
TEXT_PIPELINE = {
    "benchmark": "text_pipeline",
    "reports": 100,
    "reports_per_second": {"normalise_plus_tokenize": 250.0, "tokenize_raw_reports (peer baseline)": 200.0},
    "ratio_normalise_plus_tokenize_to_tokenize_only": 1.25,
    "ratio_normalise_plus_tokenize_to_tokenize_only_cpu": 1.3,
    "notes": "Load average at the start: 9.9, at the end: 9.9.",
    "machine": {"platform": "Linux", "cpu_count": 8, "cpu_model": "Test CPU 9000", "gpus": ["Test GPU"],
                "python": "3.11.7", "tokenizers": "0.1.0", "transformers": "9.0.0",
                "load_average_1min_start_end": [0.5, 0.75], "date": "2030-01-02T03:04:05+00:00"},
}
# As bench_model_step.py wrote it before the machine record: no cores, GPU, date; load in its own field.
MODEL_STEP = {
    "benchmark": "forward+backward step, dual encoder + contrastive loss",
    "cpu": "x86_64",
    "load_average_1min_before_after": [2.0, 3.0],
    "versions": {"torch": "2.0", "transformers": "5.0"},
    "medvl": {"median_step_s": 2.0},
    "clip": {"median_step_s": 2.2},
    "time_ratio_medvl_over_clip": 2.0 / 2.2,
    "cpu_time_ratio_medvl_over_clip": 0.8,
}
README = "# Benchmarks\n\nintro kept\n\n<!-- summary:start -->\nold table\n<!-- summary:end -->\n\nafter kept\n"


@pytest.fixture
def folder(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "text_pipeline.json").write_text(json.dumps(TEXT_PIPELINE))
    (results / "model_step_cpu.json").write_text(json.dumps(MODEL_STEP))
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def table_row(table, name):
    return [cell.strip() for cell in next(line for line in table.splitlines() if name in line).split("|")[1:-1]]


def test_rows_ratios_and_targets(folder):
    table = summarize.summarize(folder / "results", folder / "README.md")
    text = dict(zip(summarize.COLUMNS, table_row(table, "text_pipeline.json")))
    assert (text["MedVL"], text["Peer"]) == ("250 reports/s", "200 reports/s")
    assert (text["Ratio"], text["Target"], text["Met"]) == ("1.25× (CPU time 1.30×)", "≥ 1.0×", "met")
    assert text["Machine"] == "Test CPU 9000, 8 cores, GPU Test GPU"
    assert text["Versions"] == "tokenizers 0.1.0, transformers 9.0.0"
    assert (text["Load average"], text["Date"]) == ("0.5 → 0.8", "2030-01-02")

    # The script records time over CLIP's; the table shows the speed ratio, 2.2 / 2.0.
    step = dict(zip(summarize.COLUMNS, table_row(table, "model_step_cpu.json")))
    assert (step["MedVL"], step["Peer"]) == ("2 s/step", "2.2 s/step")
    assert (step["Ratio"], step["Target"]) == ("1.10× (CPU time 1.25×)", "≥ 1.2×")
    assert step["Met"] == "not met (met by CPU time)"
    # Fields the older run did not record read as "–", not as an error.
    assert step["Machine"] == "x86_64, – cores, GPU –"
    assert step["Versions"] == "torch 2.0, transformers 5.0, timm –"
    assert (step["Load average"], step["Date"]) == ("2.0 → 3.0", "–")


def test_readme_rewritten_between_markers_only(folder):
    table = summarize.summarize(folder / "results", folder / "README.md")
    readme = (folder / "README.md").read_text()
    assert "old table" not in readme
    before, after = README.split("old table\n")
    assert readme == before + table + "\n" + after
    summarize.summarize(folder / "results", folder / "README.md")
    assert (folder / "README.md").read_text() == readme  # rerunning changes nothing


def test_several_runs_in_one_file_each_get_rows(folder):
    later = {**TEXT_PIPELINE, "ratio_normalise_plus_tokenize_to_tokenize_only": 0.9,
             "machine": {**TEXT_PIPELINE["machine"], "date": "2030-02-01T00:00:00+00:00"}}
    (folder / "results" / "text_pipeline.json").write_text(json.dumps([TEXT_PIPELINE, later]))
    table = summarize.summarize(folder / "results", folder / "README.md")
    rows = [line for line in table.splitlines() if "text_pipeline.json" in line]
    assert len(rows) == 2 and "| 0.90× (CPU time 1.30×) | ≥ 1.0× | not met (met by CPU time) |" in rows[1]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"benchmark": "no_such_benchmark"}), "[1, 2]"])
def test_malformed_results_name_the_file(folder, content, capsys):
    (folder / "results" / "broken.json").write_text(content)
    with pytest.raises(summarize.ResultsError, match="broken.json"):
        summarize.summarize(folder / "results", folder / "README.md")
    assert (folder / "README.md").read_text() == README
    with pytest.raises(SystemExit, match="broken.json"):
        summarize.main(["--results", str(folder / "results"), "--readme", str(folder / "README.md")])


def test_data_loading_rows_compare_each_loader_with_the_step_it_feeds(folder):
    record = {"benchmark": "pretraining data pipeline: pairs/s out of the loader vs the step", "settings": {
        "demo": {"image_side_on_disk": 64, "model_image_size": 64, "augment": False, "step_pairs_per_second": 50.0,
                 "loader_pairs_per_second": {"num_workers=0": 40.0, "num_workers=1": 150.0}},
        "384px": {"image_side_on_disk": 384, "model_image_size": 384, "augment": True,
                  "loader_pairs_per_second": {"num_workers=0": 30.0}}}}
    (folder / "results" / "data_loading.json").write_text(json.dumps(record))
    table = summarize.summarize(folder / "results", folder / "README.md")
    rows = [dict(zip(summarize.COLUMNS, table_row(line, "data_loading.json")))
            for line in table.splitlines() if "data_loading.json" in line]
    assert [(r["MedVL"], r["Peer"], r["Ratio"], r["Met"]) for r in rows] == [
        ("40 pairs/s", "50 pairs/s", "0.80×", "not met"), ("150 pairs/s", "50 pairs/s", "3.00×", "met"),
        ("30 pairs/s", "–", "–", "")]
    assert "384 px JPEG files to 384 px, augmentation on" in rows[2]["Compared"]

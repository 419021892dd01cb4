"""train/ablate.py: the grid is parsed with errors naming the bad item, and a two-cell grid of a few steps writes its
table, JSON and plot."""

import json

import pytest

from train.ablate import main, parse_grid


def test_grid_parsing_and_bad_items():
    cells = parse_grid(["fusion=none,merged", "init=domain,general"])
    assert cells == [{"fusion": f, "init": i} for f in ("none", "merged") for i in ("domain", "general")]
    assert parse_grid(["init=general"]) == [{"fusion": "cross_attention", "init": "general"}]
    with pytest.raises(ValueError, match=r"unknown fusion value\(s\) \['concat'\]"):
        parse_grid(["fusion=none,concat"])
    with pytest.raises(ValueError, match="'depth=2': expected fusion"):
        parse_grid(["depth=2"])
    with pytest.raises(ValueError, match="init given twice"):
        parse_grid(["init=domain", "init=general"])


def test_bad_data_and_weights_are_named_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="--data chexpert:/x: both stages need image-report pairs"):
        main(["--data", "chexpert:/x", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="--general_vision_weights /nowhere.safetensors"):
        main(["--general_vision_weights", "/nowhere.safetensors", "--out", str(tmp_path)])


def test_two_cell_grid_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "ablate"
    results = main(["--grid", "fusion=none", "init=domain,general", "--data", "synthcxr:n=48,size=64,seed=0",
                    "--out", str(out), "--steps", "2", "--validation_size", "32", "--batch_size", "16",
                    "--bootstrap_samples", "10"])
    saved = json.loads((out / "ablation.json").read_text())
    assert [(c["fusion"], c["init"]) for c in saved["cells"]] == [("none", "domain"), ("none", "general")]
    domain, general = saved["cells"]
    assert domain["pretrain"]["steps"] == 2 and "pretrain" not in general
    for cell in saved["cells"]:
        assert 0.0 <= cell["finetune"]["auroc_macro"] <= 1.0 and len(cell["finetune"]["auroc_macro_ci"]) == 2
    assert (out / "fusion-none_init-domain" / "pretrain" / "checkpoint-last").is_dir()
    assert (out / "fusion-none_init-domain" / "finetune" / "eval_results.json").is_file()
    assert set(saved["definitions"]) == {"domain", "general"}
    table = (out / "ablation.md").read_text()
    assert "| none | domain | 2 |" in table and "| none | general | 0 | n/a |" in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG" and results["plot"].endswith("ablation.png")
    assert "fine-tuned macro AUC" in capsys.readouterr().out

"""train/ablate.py: the grid is parsed with errors naming the bad item, and a two-cell grid of a few steps writes its
table, JSON and plot; init=general / domain start from MedVL folders written by `medvl convert` (a tiny random
CLIPModel), a folder of another fusion_type is pretrained with its fusion layers rebuilt, and a bad start is a
one-line error naming it."""

import json

import pytest
import torch

from convert_fixtures import save_tiny_clip
from train.ablate import cli, main, parse_grid
from train.ablate_sources import with_fusion_type
from train.cli import main as medvl
from train.user_errors import run_main

TINY_RUN = ["--data", "synthcxr:n=48,size=64,seed=0", "--steps", "2", "--validation_size", "32", "--batch_size", "16",
            "--bootstrap_samples", "10"]


@pytest.fixture(scope="module")
def converted_clip(tmp_path_factory):
    """A tiny random CLIPModel converted by `medvl convert --from clip` (fusion_type none), with its tokenizer."""
    folder = tmp_path_factory.mktemp("clip")
    save_tiny_clip(folder / "clip")
    assert medvl(["convert", "--from", "clip", "--src", str(folder / "clip"), "--out", str(folder / "medvl"),
                  "--fusion-type", "none", "--quiet"]) == 0
    return folder


def test_grid_parsing_and_bad_items():
    cells = parse_grid(["fusion=none,merged", "init=domain,general"])
    assert cells == [{"fusion": f, "init": i} for f in ("none", "merged") for i in ("domain", "general")]
    assert parse_grid(["init=random"]) == [{"fusion": "cross_attention", "init": "random"}]
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
        main(["--grid", "init=general", "--general_vision_weights", "/nowhere.safetensors", "--out", str(tmp_path)])


def test_bad_starts_are_one_line_errors_naming_them(tmp_path, converted_clip, capsys):
    out = ["--out", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="init=general needs a general-domain start: --general_model DIR .* use "
                                         "init=random"):
        main(["--grid", "init=random,general", *out])
    with pytest.raises(FileNotFoundError, match="--general_model /nowhere/medvl: no such folder"):
        main(["--grid", "init=general", "--general_model", "/nowhere/medvl", *out])
    clip_folder = str(converted_clip / "clip")
    with pytest.raises(ValueError, match=f"--domain_model {clip_folder}: a 'clip' model, not a MedVL one; convert "
                                         f"it first with `medvl convert --from clip --src {clip_folder}"):
        main(["--grid", "init=domain", "--domain_model", clip_folder, *out])
    with pytest.raises(ValueError, match="--domain_model is given but the grid has no init=domain cell"):
        main(["--grid", "init=random", "--domain_model", str(converted_clip / "medvl"), *out])
    with pytest.raises(ValueError, match="--general_model and --general_vision_weights both given"):
        main(["--grid", "init=general", "--general_model", str(converted_clip / "medvl"),
              "--general_vision_weights", str(converted_clip / "medvl" / "model.safetensors"), *out])
    assert not (tmp_path / "out").exists()  # nothing ran
    # From the command line (`python train/ablate.py` runs cli() through run_main): one line on stderr, status 2.
    with pytest.raises(SystemExit) as exited:
        run_main(cli, ["--grid", "init=general", "--general_model", str(tmp_path / "missing"), *out])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --general_model {tmp_path / 'missing'}: no such folder (expected a MedVL model "
        "folder, e.g. written by `medvl convert --from clip|open_clip|towers --src SOURCE --out DIR`)"]


def test_fusion_layers_rebuilt_for_a_cell_of_another_fusion_type(tmp_path, converted_clip):
    from modeling_medvl import MedVLForPreTraining

    folder = converted_clip / "medvl"
    same, note = with_fusion_type(folder, "none", tmp_path / "same", seed=0)
    assert same == folder and not (tmp_path / "same").exists() and "from the folder" in note
    rebuilt, note = with_fusion_type(folder, "merged", tmp_path / "merged", seed=0)
    assert rebuilt == tmp_path / "merged" and note == "fusion layers rebuilt fresh for merged (the folder has none)"
    source, model = MedVLForPreTraining.from_pretrained(str(folder)), MedVLForPreTraining.from_pretrained(str(rebuilt))
    assert model.config.fusion_type == "merged" and model.config.itm_weight > 0
    assert model.config.text_config.to_dict() == source.config.text_config.to_dict()
    weights, kept = model.state_dict(), source.state_dict()
    assert any(key.startswith("medvl.fusion.") for key in weights) and "itm_head.weight" in weights
    for key, value in kept.items():  # towers, projections and temperature are the folder's
        if key.startswith("medvl."):
            assert torch.equal(weights[key], value), key


@pytest.mark.slow
def test_two_cell_grid_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "ablate"
    results = main(["--grid", "fusion=none", "init=domain,random", "--out", str(out), *TINY_RUN])
    saved = json.loads((out / "ablation.json").read_text())
    assert [(c["fusion"], c["init"]) for c in saved["cells"]] == [("none", "domain"), ("none", "random")]
    domain, random = saved["cells"]
    assert domain["pretrain"]["steps"] == 2 and "pretrain" not in random
    assert domain["source"] == random["source"] == "fresh init"
    for cell in saved["cells"]:
        assert 0.0 <= cell["finetune"]["auroc_macro"] <= 1.0 and len(cell["finetune"]["auroc_macro_ci"]) == 2
    assert (out / "fusion-none_init-domain" / "pretrain" / "checkpoint-last").is_dir()
    assert (out / "fusion-none_init-domain" / "finetune" / "eval_results.json").is_file()
    assert set(saved["definitions"]) == {"random", "general", "domain"}
    table = (out / "ablation.md").read_text()
    assert "| none | domain | fresh init | 2 |" in table and "| none | random | fresh init | 0 | n/a |" in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG" and results["plot"].endswith("ablation.png")
    assert "fine-tuned macro AUC" in capsys.readouterr().out


@pytest.mark.slow
def test_general_and_domain_cells_start_from_converted_clip_folders(tmp_path, converted_clip):
    """The converted folder (fusion_type none) as --general_model and --domain_model of a cross_attention grid: the
    general cell fine-tunes from it, the domain cell pretrains from it (fusion layers rebuilt, its tokenizer kept)."""
    out, folder = tmp_path / "ablate", converted_clip / "medvl"
    main(["--grid", "fusion=cross_attention", "init=general,domain", "--general_model", str(folder),
          "--domain_model", str(folder), "--domain_model_steps", "1", "--out", str(out), *TINY_RUN])
    saved = json.loads((out / "ablation.json").read_text())
    general, domain = saved["cells"]
    assert general["source"] == domain["source"] == str(folder.resolve())
    assert "pretrain" not in general and domain["pretrain"]["steps"] == 1
    assert domain["fusion_layers"] == "fusion layers rebuilt fresh for cross_attention (the folder has none)"
    run_config = (out / "fusion-cross_attention_init-domain" / "pretrain" / "run_config.yaml").read_text()
    assert f"tokenizer: {folder.resolve()}" in run_config and "max_text_length: 16" in run_config  # CLIP's positions
    pretrained = json.loads((out / "fusion-cross_attention_init-domain" / "pretrain" / "checkpoint-last"
                             / "config.json").read_text())
    assert pretrained["fusion_type"] == "cross_attention"
    source_vision = json.loads((folder / "config.json").read_text())["vision_config"]
    assert {key: pretrained["vision_config"][key] for key in source_vision} == source_vision
    finetuned = json.loads((out / "fusion-cross_attention_init-general" / "finetune" / "checkpoint-best"
                            / "config.json").read_text())
    assert finetuned["vision_config"]["image_size"] == 32  # the CLIP tower, not --model_preset's
    table = (out / "ablation.md").read_text()
    assert f"| cross_attention | general | {folder.resolve()} | 0 |" in table
    assert f"| cross_attention | domain | {folder.resolve()} | 1 |" in table

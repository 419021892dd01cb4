"""The demo's export check: the exported folder, loaded the way a Hub user loads it (a fresh offline process, its
own remote code, the Auto classes), gives the checkpoints' outputs on the same test images and phrases."""

import json
from pathlib import Path

import torch

from hub_cards.reload_check import reload_check
from modeling_medvl import MedVLModel
from processing import load_mimic_cxr
from train.finetune_model import load_processor
from train.lora_presets import load_finetuned_model

PHRASES = ["left pleural effusion", "cardiomegaly"]
GENERATED_TOKENS = 8  # what reload_check generates


def merged(folder: Path):
    model = load_finetuned_model(folder)
    return (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model).eval()


@torch.no_grad()
def checkpoint_outputs(demo, inputs: dict) -> dict:
    """{(task or "root", Auto class): {output: tensor}} from the training checkpoints, loaded with the project's own
    classes."""
    root = MedVLModel.from_pretrained(str(demo.pretrained)).eval()
    outputs = {("root", "AutoModel"): dict(root(**inputs))}
    classifier = merged(demo.best("classification"))
    outputs[("classification", "AutoModelForImageClassification")] = {
        "logits": classifier(pixel_values=inputs["pixel_values"]).logits}
    answerer = merged(demo.best("vqa"))
    outputs[("vqa", "AutoModelForVisualQuestionAnswering")] = {"logits": answerer(**inputs).logits}
    reporter = merged(demo.best("report_generation"))
    outputs[("report_generation", "AutoModelForImageTextToText")] = {"sequences": reporter.generate(
        pixel_values=inputs["pixel_values"], max_new_tokens=GENERATED_TOKENS, do_sample=False)}
    return outputs


def compare_export(demo, export_folder: Path) -> dict:
    """Largest absolute difference per output between the reloaded folder and the checkpoints; raises when the
    folder does not reload, imports the project's packages, or any output differs beyond float rounding."""
    processor = load_processor(demo.pretrained, demo.scale.image_size)
    images = list(load_mimic_cxr(demo.mimic, split="test").select(range(len(PHRASES)))["image"])
    inputs = dict(processor(images=images, text=PHRASES, padding=True, return_tensors="pt"))
    reloaded = reload_check(export_folder, inputs)
    if reloaded["project_imported"]:
        raise RuntimeError(f"the exported folder's code imported the project's packages {reloaded['project_imported']}")
    differences = {}
    for (task, auto_class), expected in checkpoint_outputs(demo, inputs).items():
        got = (reloaded if task == "root" else reloaded["task_models"][task])["outputs"][auto_class]
        for key, value in expected.items():
            if key not in got:
                continue
            if value.dtype == torch.long:
                difference = float((got[key] != value).sum()) if got[key].shape == value.shape else float("inf")
            else:
                difference = float((got[key].float() - value.float()).abs().max())
            differences[f"{task}/{auto_class}/{key}"] = difference
    worst = max(differences.values())
    if worst > 1e-4:
        raise RuntimeError(f"the exported folder's outputs differ from the checkpoints': {differences}")
    return {"max_abs_difference": differences, "models": reloaded["models"],
            "task_models": {task: found["models"] for task, found in reloaded["task_models"].items()}}


def write_export_check(demo, export_folder: Path, out: Path) -> dict:
    result = compare_export(demo, export_folder)
    out.write_text(json.dumps(result, indent=2))
    print(f"  the exported folder reloads offline through the Auto classes; largest output difference "
          f"{max(result['max_abs_difference'].values()):.2e} over {len(result['max_abs_difference'])} outputs",
          flush=True)
    return result


__all__ = ["compare_export", "write_export_check"]

"""Tiny training runs written in the layouts pretrain.py and finetune.py leave, for the export, card and Space
tests: a pretraining run (MedVLForPreTraining + processor + run files), a LoRA classification run (adapter +
config.json + processor + eval_results.json) and a report-generation run (MedVLForConditionalGeneration + processor
+ eval_results.json, as `train/finetune.py --task report_generation` leaves it)."""

import json
from functools import lru_cache

import torch
import yaml

from modeling_medvl import (MedVLConfig, MedVLForConditionalGeneration, MedVLForImageClassification,
                            MedVLForPreTraining, MedVLForQuestionAnswering)
from helpers import synthcxr_tokenizer

from processing.synthcxr import generate_synthcxr
from train.lora_presets import LoraSpec, apply_lora
from train.pretrain_setup import build_processor, token_ids

LABELS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
ANSWERS = ["yes", "no", "left", "right"]


@lru_cache(maxsize=1)
def _tiny_processor():
    return build_processor(synthcxr_tokenizer(64, vocab_size=400), 64)


def tiny_processor_and_config():
    """(processor, fresh tiny config sized to its tokenizer); the processor (only ever saved) is trained once."""
    processor = _tiny_processor()
    return processor, MedVLConfig.from_preset("tiny", text_config=token_ids(processor.tokenizer))


def _perturb(parameters, scale=0.05):
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(torch.randn_like(parameter) * scale)


def write_pretraining_run(root):
    """runs/p/checkpoint-best with MedVLForPreTraining and its processor, run_config.yaml, train_summary.json."""
    processor, config = tiny_processor_and_config()
    model = MedVLForPreTraining(config).eval()
    _perturb(model.parameters(), 0.01)
    checkpoint = root / "p" / "checkpoint-best"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    (root / "p" / "run_config.yaml").write_text(yaml.safe_dump({
        "data": ["synthcxr:n=2000,size=64,seed=0"], "model_preset": "tiny", "learning_rate": 5e-4, "seed": 0,
        "mixed_precision": "no", "resolved": {"num_processes": 2, "global_batch_size": 128, "max_steps": 300,
                                              "train_rows": 2000}}))
    (root / "p" / "train_summary.json").write_text(json.dumps(
        {"stop_reason": "max_steps", "steps": 300, "seconds_this_launch": 559.0, "global_batch_size": 128}))
    return checkpoint


def write_lora_classification_run(root):
    """runs/ft/checkpoint-best holding a LoRA adapter (non-zero) over base_model/, and eval_results.json."""
    processor, config = tiny_processor_and_config()
    config.num_labels, config.problem_type = len(LABELS), "multi_label_classification"
    config.id2label, config.label2id = dict(enumerate(LABELS)), {name: i for i, name in enumerate(LABELS)}
    base_path, checkpoint = root / "ft" / "base_model", root / "ft" / "checkpoint-best"
    base = MedVLForImageClassification(config).eval()
    base.save_pretrained(base_path)
    model = apply_lora(base, LoraSpec(r=4), base_path)
    _perturb([p for name, p in model.named_parameters() if "lora_" in name or "classifier" in name])
    model.save_pretrained(checkpoint)
    model.get_base_model().config.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    eval_path = root / "ft" / "eval_results.json"
    eval_path.write_text(json.dumps(classification_eval()))
    return checkpoint, eval_path, model.eval()


def write_report_generation_run(root):
    """runs/rg/checkpoint-best with MedVLForConditionalGeneration (random, but never ending at once: special tokens
    are pushed down, so greedy decoding writes text) and its processor, and runs/rg/eval_results.json."""
    processor, config = tiny_processor_and_config()
    model = MedVLForConditionalGeneration(config).eval()
    _perturb(model.parameters(), 0.01)
    with torch.no_grad():
        model.lm_head.decoder.bias[processor.tokenizer.all_special_ids] = -1e4
    model.config.architectures = [type(model).__name__]
    checkpoint = root / "rg" / "checkpoint-best"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    eval_path = root / "rg" / "eval_results.json"
    eval_path.write_text(json.dumps(report_generation_eval()))
    return checkpoint, eval_path, model


def write_vqa_run(root):
    """runs/vqa/checkpoint-best with MedVLForQuestionAnswering (answers in id2label) and its processor."""
    processor, config = tiny_processor_and_config()
    config.num_labels, config.id2label = len(ANSWERS), dict(enumerate(ANSWERS))
    config.label2id = {answer: i for i, answer in enumerate(ANSWERS)}
    model = MedVLForQuestionAnswering(config).eval()
    _perturb(model.parameters(), 0.01)
    model.config.architectures = [type(model).__name__]
    checkpoint = root / "vqa" / "checkpoint-best"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    return checkpoint, model


def report_generation_eval():
    """An eval_results.json in the shape `train/finetune.py --task report_generation` writes."""
    scores = {"cider": 0.412, "rouge_l": 0.305, "bleu_1": 0.351, "bleu_2": 0.24, "bleu_3": 0.17, "bleu_4": 0.121}
    return {"task": "report_generation", "split": "validation", "data": "synthcxr:n=600,size=64,seed=0",
            "validation_data": "synthcxr:n=100,size=64,seed=1", "num_studies": 100, "max_new_tokens": 64,
            "decoding": "greedy", **scores, "baselines": {"majority": {**{k: v / 2 for k, v in scores.items()},
                                                                       "report": "no acute cardiopulmonary process"}}}


def classification_eval():
    """An eval_results.json in the shape train/finetune.py writes."""
    return {
        "task": "classification", "split": "validation", "data": ["synthcxr:n=600,size=64,seed=0"],
        "validation_data": "synthcxr:n=200,size=64,seed=1", "num_studies": 200, "label_names": LABELS,
        "bootstrap_samples": 200, "auroc_macro": 0.8125, "auroc_macro_ci": [0.75, 0.87],
        "auroc_per_label": {"Cardiomegaly": 0.9, "Pleural Effusion": 0.8, "Pneumothorax": 0.7375},
        "auroc_per_label_ci": {"Cardiomegaly": [0.85, 0.95], "Pleural Effusion": [0.7, 0.88],
                               "Pneumothorax": [0.6, 0.85]},
        "labels_in_macro": LABELS, "labels_without_both_classes": [], "bootstrap_skipped_macro": 0,
        "baselines": {"majority": {"auroc_macro": 0.5, "auroc_macro_ci": [0.5, 0.5]}},
        "trainable_parameters": {"trainable": 1000, "total": 50000},
    }


def synthcxr_png(path, size=64):
    next(iter(generate_synthcxr(1, size=size, seed=5))).image.save(path)
    return path

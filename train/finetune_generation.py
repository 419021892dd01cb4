"""Report-generation fine-tuning (`train/finetune.py --task report_generation`): MedVLForConditionalGeneration
trained with teacher forcing on image -> report, evaluated with `model.generate` (greedy, at most
`--max_new_tokens` tokens) and the medvl_report_generation metric (CIDEr-D, ROUGE-L, BLEU-1..4).

    accelerate launch train/finetune.py --task report_generation --data mimic-cxr:/data/mimic-cxr-jpg \\
        --init runs/p1/checkpoint-best
    accelerate launch train/finetune.py --config train/configs/finetune_report_tiny_synthcxr.yaml --output_dir runs/rg

Early stopping and the best checkpoint by validation CIDEr (`eval_cider`). With `--lora` the vision tower gets
adapters and the report decoder with its LM head (the task's head) trains in full. eval_results.json holds the
metric's scores, with bootstrap 95% intervals over studies (`<score>_ci`, `--bootstrap_samples`), for the best model
and two baselines, the most frequent training report given for every image (`majority`) and the model before training
(`initial_model`, without intervals); examples.html shows validation images with their reference and generated
reports side by side.
"""


import numpy as np
import torch
from transformers import Trainer

from modeling_medvl import MedVLForConditionalGeneration
from train.finetune_args import training_values
from train.finetune_examples import write_examples_html
from train.finetune_model import build_text_task_model
from train.finetune_report_data import ReportCollator, load_report_splits, most_frequent_report, normalized_reports
from train.finetune_run import (
    start_run,
    EVAL_RESULTS_FILE,
    log_parameters,
    prepare_model,
    save_best,
    save_run_config,
    training_callbacks,
    write_run_files,
)
from train.logging_utils import get_logger
from train.lora_presets import trainable_parameters
from train.metrics import load_metric

logger = get_logger("medvl.finetune")

EXAMPLES_FILE = "examples.html"
SCORES = ("cider", "rouge_l", "bleu_1", "bleu_2", "bleu_3", "bleu_4")


def generate_reports(model, pixel_values, text_config, max_new_tokens: int) -> torch.Tensor:
    """Greedy reports `(batch, length)` from the start token, ending at the end token (padded after it)."""
    start = torch.full((pixel_values.shape[0], 1), text_config.bos_token_id, dtype=torch.long,
                       device=pixel_values.device)
    return model.generate(input_ids=start, attention_mask=torch.ones_like(start), pixel_values=pixel_values,
                          max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                          eos_token_id=text_config.eos_token_id, pad_token_id=text_config.pad_token_id)


class GenerationTrainer(Trainer):
    """Trainer whose evaluation also generates: the teacher-forced loss as usual, and the greedy report of each
    image as the `predictions` that `compute_metrics` scores."""

    def __init__(self, *args, max_new_tokens=128, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, _, _ = super().prediction_step(model, inputs, True, ignore_keys)
        if prediction_loss_only:
            return loss, None, None
        inputs = self._prepare_inputs(inputs)
        unwrapped = self.accelerator.unwrap_model(model)
        text_config = unwrapped.config.text_config
        with torch.no_grad():
            generated = generate_reports(unwrapped, inputs["pixel_values"], text_config, self.max_new_tokens)
        return loss, generated, inputs["labels"]


def decode_reports(tokenizer, token_ids) -> list:
    ids = np.asarray(token_ids[0] if isinstance(token_ids, tuple) else token_ids)
    ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # Trainer pads batches of other lengths with -100
    return [text.strip() for text in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]


@torch.no_grad()
def generate_report_texts(model, processor, images, max_new_tokens: int, batch_size: int) -> list:
    """Greedy reports for `images` (PIL images), decoded, outside a Trainer."""
    model.eval()
    device = next(model.parameters()).device
    reports = []
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
        generated = generate_reports(model, pixel_values.to(device), model.config.text_config, max_new_tokens)
        reports += decode_reports(processor.tokenizer, generated.cpu())
    return reports


def report_scores(predictions, references, bootstrap_samples=0, seed=0) -> dict:
    """The medvl_report_generation metric's scores, with `<score>_ci` bootstrap 95% intervals over studies when
    `bootstrap_samples` > 0."""
    metric = load_metric("medvl_report_generation", keep_in_memory=True)
    return metric.compute(predictions=list(predictions), references=list(references),
                          bootstrap_samples=bootstrap_samples, seed=seed)


def score_summary(result: dict) -> dict:
    """The scores and, when computed, their intervals (as lists, as JSON keeps them)."""
    return {**{name: result[name] for name in SCORES},
            **{f"{name}_ci": list(result[f"{name}_ci"]) for name in SCORES if f"{name}_ci" in result}}


class ReportMetrics:
    """Trainer's `compute_metrics`: the generated reports against the (normalised) validation reports, in order."""

    def __init__(self, tokenizer, references):
        self.tokenizer, self.references = tokenizer, list(references)

    def __call__(self, eval_prediction) -> dict:
        generated = decode_reports(self.tokenizer, eval_prediction.predictions)
        if len(generated) != len(self.references):
            raise ValueError(f"{len(generated)} generated reports for {len(self.references)} validation studies")
        return report_scores(generated, self.references)


def describe_scores(result: dict) -> str:
    """CIDEr, ROUGE-L and BLEU-4 in a line, each with its interval when there is one."""
    def one(label, name):
        interval = result.get(f"{name}_ci")
        return f"{label} {result[name]:.4f}" + (f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else "")
    return ", ".join(one(label, name) for label, name in (("CIDEr", "cider"), ("ROUGE-L", "rouge_l"),
                                                           ("BLEU-4", "bleu_4")))


def run_report_generation(model_args, data_args, args, chosen_training_values=None) -> dict:
    run = start_run(model_args, data_args, args)
    started, output_dir, is_main, lora, resume, cache_root = (
        run.started, run.output_dir, run.is_main, run.lora, run.resume, run.cache_root
    )
    splits = load_report_splits(data_args, cache_root, args.dataloader_num_workers)
    if is_main:
        logger.info(f"training {splits.train_spec}: {len(splits.train)} reports; validation "
                    f"{splits.validation_spec}: {len(splits.validation)} reports")
    untied = {"tie_word_embeddings": False} if lora is not None else None  # see lora_presets.HEAD_MODULES
    build = lambda: build_text_task_model(model_args, MedVLForConditionalGeneration, splits.train["report"],  # noqa
                                          output_dir, is_main, untied, data_args.max_text_length, resume)
    model, processor, base_path = prepare_model(model_args, lora, output_dir, resume, is_main, build)
    parameters = trainable_parameters(model)
    log_parameters(parameters, is_main)
    references = normalized_reports(processor, splits.validation["report"])
    trainer = GenerationTrainer(
        model=model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        data_collator=ReportCollator(processor, data_args.max_text_length),
        processing_class=processor,
        compute_metrics=ReportMetrics(processor.tokenizer, references),
        callbacks=training_callbacks(args, base_path),
        max_new_tokens=data_args.max_new_tokens,
    )
    resolved = {"trainable_parameters": parameters, "validation_data": splits.validation_spec,
                "lora_base_model": str(base_path) if base_path else None}
    save_run_config(output_dir, model_args, data_args, chosen_training_values or training_values(args), resolved,
                    is_main)

    def generated_reports():
        return decode_reports(processor.tokenizer,
                              trainer.predict(splits.validation, metric_key_prefix="generate").predictions)

    baselines = {}
    if args.evaluate_initial_model and resume is None:
        baselines["initial_model"] = report_scores(generated_reports(), references)
    train_result = trainer.train(resume_from_checkpoint=resume)
    save_best(trainer, output_dir, base_path is not None)
    generated = generated_reports()
    if not trainer.is_world_process_zero():
        return {}
    final = report_scores(generated, references, args.bootstrap_samples, args.seed)
    common = most_frequent_report(processor, splits.train["report"])
    baselines["majority"] = {**score_summary(report_scores([common] * len(references), references,
                                                           args.bootstrap_samples, args.seed)), "report": common}
    results = {
        "task": "report_generation",
        "split": "validation",
        "data": splits.train_spec,
        "validation_data": splits.validation_spec,
        "num_studies": len(references),
        "max_new_tokens": data_args.max_new_tokens,
        "decoding": "greedy",
        "bootstrap_samples": args.bootstrap_samples,
        **score_summary(final),
        "baselines": baselines,
        "trainable_parameters": parameters,
    }
    if data_args.html_examples:
        shown = min(data_args.html_examples, len(references))
        results["examples"] = write_examples_html(
            output_dir / EXAMPLES_FILE, splits.validation.select(range(shown))["image"], references[:shown],
            generated[:shown], title=f"{splits.validation_spec}: reference and generated reports",
        ).name
    facts = {"trainable_parameters": parameters, "lora": model_args.lora if lora is not None else None}
    results = write_run_files(trainer, train_result, results, facts, "cider", started)
    compared = ", ".join(f"{name} {baseline['cider']:.4f}" for name, baseline in baselines.items())
    logger.info(f"validation {describe_scores(final)}; CIDEr baselines: {compared}; results in "
                f"{output_dir / EVAL_RESULTS_FILE}")
    return results


__all__ = ["GenerationTrainer", "ReportMetrics", "decode_reports", "describe_scores", "generate_report_texts",
           "generate_reports", "report_scores", "run_report_generation", "score_summary"]

"""VQA fine-tuning (`train/finetune.py --task vqa`): closed questions answered by MedVLForQuestionAnswering, a
classifier over the answer vocabulary of the training split; open questions answered in free text by the report
decoder (MedVLForConditionalGeneration after a question prompt, train/finetune_vqa_open.py), trained after the
classifier on the open training questions.

    accelerate launch train/finetune.py --task vqa --data vqa-rad:/data/vqa-rad --init runs/p1/checkpoint-best
    accelerate launch train/finetune.py --config train/configs/finetune_vqa_tiny_synthcxr.yaml --output_dir runs/vqa

The classifier: early stopping and the best checkpoint by validation accuracy (`eval_accuracy`, over all questions),
in `checkpoint-best/`; the generator in `open_answers/checkpoint-best/`. eval_results.json holds the medvl_vqa
metric's accuracy, closed (the classifier's answers) and open (the generated answers), with bootstrap 95% intervals;
the classifier's own open accuracy (`classifier_open_accuracy`); the validation answers outside the training
vocabulary (the classifier can never give them: counted wrong, never dropped); and two baselines: the most frequent
training answer of each answer type (`majority`) and the models before training (`initial_model`).
"""


import numpy as np
from transformers import Trainer

from modeling_medvl import MedVLForQuestionAnswering
from train.finetune_args import training_values
from train.finetune_model import build_text_task_model, label_config
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
from train.finetune_vqa_data import VqaCollator, load_vqa_splits, normalize_answer, out_of_vocabulary
from train.finetune_vqa_open import open_rows, train_open_answers
from train.logging_utils import get_logger
from train.lora_presets import trainable_parameters
from train.metrics import load_metric

logger = get_logger("medvl.finetune")

SCORES = ("accuracy", "closed_accuracy", "open_accuracy")


def vqa_scores(predictions, references, answer_types, vocabulary=None, bootstrap_samples=0, seed=0) -> dict:
    """The medvl_vqa metric's result (accuracy, closed and open; with a `vocabulary`, predictions outside it counted
    wrong), with its `<score>_ci` bootstrap 95% intervals over questions when `bootstrap_samples` > 0."""
    metric = load_metric("medvl_vqa", keep_in_memory=True)
    return metric.compute(predictions=list(predictions), references=list(references), answer_types=list(answer_types),
                          answer_vocabulary=list(vocabulary) if vocabulary is not None else None,
                          bootstrap_samples=bootstrap_samples, seed=seed)


def answers_of(logits, vocabulary) -> list:
    logits = logits[0] if isinstance(logits, tuple) else logits
    return [vocabulary[index] for index in np.asarray(logits).argmax(-1)]


class VqaMetrics:
    """Trainer's `compute_metrics` over the validation split (Trainer evaluates it in order, once per row)."""

    def __init__(self, validation, vocabulary):
        self.references, self.answer_types = validation["answer"], validation["answer_type"]
        self.vocabulary = list(vocabulary)

    def __call__(self, eval_prediction) -> dict:
        predicted = answers_of(eval_prediction.predictions, self.vocabulary)
        if len(predicted) != len(self.references):
            raise ValueError(f"{len(predicted)} predictions for {len(self.references)} validation questions")
        result = vqa_scores(predicted, self.references, self.answer_types, self.vocabulary)
        return {key: result[key] for key in (*SCORES, "out_of_vocabulary")}


def majority_answers(splits) -> list:
    """The most frequent training answer of each question's answer type (of all training answers for a type the
    training split lacks)."""
    overall = splits.answers[0]
    chosen = {kind: min(counts, key=lambda answer: (-counts[answer], answer))
              for kind, counts in splits.answer_counts.items()}
    return [chosen.get(kind.upper(), overall) for kind in splits.validation["answer_type"]]


def with_open_answers(predictions, open_indices, generated) -> list:
    """The classifier's answers with those to the open questions (at `open_indices`) replaced by `generated`."""
    combined = list(predictions)
    for index, answer in zip(open_indices, generated, strict=True):
        combined[index] = answer
    return combined


def score_summary(result: dict) -> dict:
    keep = [*SCORES, *(f"{name}_ci" for name in SCORES), "num_closed", "num_open", "out_of_vocabulary"]
    return {key: result[key] for key in keep if key in result}


def run_vqa(model_args, data_args, args, chosen_training_values=None) -> dict:
    run = start_run(model_args, data_args, args)
    started, output_dir, is_main, lora, resume, cache_root = (
        run.started, run.output_dir, run.is_main, run.lora, run.resume, run.cache_root
    )
    splits = load_vqa_splits(data_args, cache_root)
    outside = out_of_vocabulary(splits.validation, splits.answers)
    if is_main:
        logger.info(f"training {splits.train_spec}: {len(splits.train)} questions, {len(splits.answers)} answers; "
                    f"validation {splits.validation_spec}: {len(splits.validation)} questions, {outside} with an "
                    "answer outside the training vocabulary (counted wrong)")
    labels = {**label_config(splits.answers), "problem_type": "single_label_classification"}
    # The tokenizer (trained from scratch) also writes answers, for the open-answer generator.
    texts = list(splits.train["question"]) + [normalize_answer(answer) for answer in splits.train["answer"]]
    build = lambda: build_text_task_model(model_args, MedVLForQuestionAnswering, texts,  # noqa: E731
                                          output_dir, is_main, labels, data_args.max_text_length, resume)
    model, processor, base_path = prepare_model(model_args, lora, output_dir, resume, is_main, build)
    parameters = trainable_parameters(model)
    log_parameters(parameters, is_main)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        data_collator=VqaCollator(processor, splits.answers, data_args.max_text_length),
        processing_class=processor,
        compute_metrics=VqaMetrics(splits.validation, splits.answers),
        callbacks=training_callbacks(args, base_path),
    )
    resolved = {"answer_vocabulary_size": len(splits.answers), "trainable_parameters": parameters,
                "validation_data": splits.validation_spec, "lora_base_model": str(base_path) if base_path else None}
    save_run_config(output_dir, model_args, data_args, chosen_training_values or training_values(args), resolved,
                    is_main)

    references, types = splits.validation["answer"], splits.validation["answer_type"]
    open_indices = open_rows(splits.validation)
    initial = None
    if args.evaluate_initial_model and resume is None:
        initial = answers_of(trainer.predict(splits.validation, metric_key_prefix="initial").predictions,
                             splits.answers)
    train_result = trainer.train(resume_from_checkpoint=resume)
    save_best(trainer, output_dir, base_path is not None)
    classified = answers_of(trainer.predict(splits.validation, metric_key_prefix="final").predictions,
                            splits.answers)
    generator = train_open_answers(model_args, data_args, args, splits, lora, resume, is_main)
    if not trainer.is_world_process_zero():
        return {}
    predicted = with_open_answers(classified, open_indices, generator["answers"])
    final = vqa_scores(predicted, references, types, None, args.bootstrap_samples, args.seed)
    baselines = {}
    if initial is not None:
        initial = with_open_answers(initial, open_indices, generator["initial_answers"])
        baselines["initial_model"] = score_summary(vqa_scores(initial, references, types))
    baselines["majority"] = score_summary(
        vqa_scores(majority_answers(splits), references, types, splits.answers, args.bootstrap_samples, args.seed)
    )
    classifier = vqa_scores(classified, references, types, splits.answers)
    vocabulary = set(splits.answers)
    results = {
        "task": "vqa",
        "split": "validation",
        "data": splits.train_spec,
        "validation_data": splits.validation_spec,
        "num_questions": len(references),
        "answer_vocabulary_size": len(splits.answers),
        "validation_answers_outside_vocabulary": outside,
        "bootstrap_samples": args.bootstrap_samples,
        **score_summary(final),
        "classifier_accuracy": classifier["accuracy"],
        "classifier_open_accuracy": classifier["open_accuracy"],
        "open_answers_model": generator["folder"],
        "generated_open_answers": {
            "empty": sum(not answer for answer in generator["answers"]),
            "outside_vocabulary": sum(answer not in vocabulary for answer in generator["answers"]),
        },
        "baselines": baselines,
        "trainable_parameters": parameters,
        "open_answers_trainable_parameters": generator["trainable_parameters"],
    }
    facts = {"trainable_parameters": parameters, "lora": model_args.lora if lora is not None else None}
    results = write_run_files(trainer, train_result, results, facts, "accuracy", started)
    compared = ", ".join(f"{name} {baseline['closed_accuracy']:.4f}" for name, baseline in baselines.items())
    logger.info(f"validation accuracy {final['accuracy']:.4f}, closed {final['closed_accuracy']:.4f}, open "
                f"{final['open_accuracy']:.4f} ({outside} answers outside the vocabulary); closed-question "
                f"baselines: {compared}; results in {output_dir / EVAL_RESULTS_FILE}")
    return results


__all__ = ["VqaMetrics", "majority_answers", "run_vqa", "vqa_scores", "with_open_answers"]

"""What `train/evaluate_model.py` does with a model that writes reports or answers questions: report generation
(MedVLForConditionalGeneration), and VQA, by a VQA run's open-answer generator alone
(`<run>/open_answers/checkpoint-best`, train/finetune_vqa_open.py) or by its answer classifier
(MedVLForQuestionAnswering, `<run>/checkpoint-best`) with the open questions answered by the run's generator when
it is there, as in the run's own final evaluation.

- Report generation: greedy reports for the split's images (at most `--max_new_tokens` tokens), scored against the
  processor's normal form of the reference reports by the medvl_report_generation module (CIDEr-D, ROUGE-L,
  BLEU-1..4) with bootstrap 95% intervals over studies, and a side-by-side page of the first `--html_examples`.
  Sources: those of the classification evaluation that hold reports (mimic-cxr:, synthcxr:, saved:).
- VQA: every question of the split answered, by the generator greedily in free text after the question, or by the
  classifier over its answer vocabulary, scored by the medvl_vqa module, closed and open questions apart, with
  bootstrap 95% intervals over questions; the answers are kept in the results. Sources: `vqa-rad:/dir` (its test
  questions: VQA-RAD has no validation split), `slake:/dir` (validate.json / test.json), `saved:/dir` (a
  DatasetDict's validation or test split) and generated `synthcxr:n=..,size=..,seed=..` (SynthCXR in VQA-RAD's
  layout, used whole).
"""

from pathlib import Path

import torch

import processing
from train.clinical_eval_data import _saved_split, check_split, load_evaluation_split
from train.finetune_examples import write_examples_html
from train.finetune_generation import describe_scores, generate_report_texts, report_scores
from train.finetune_generation import score_summary as report_summary
from train.finetune_report_data import normalized_reports
from train.finetune_model import load_processor
from train.finetune_run import BEST_FOLDER
from train.finetune_vqa import answers_of, vqa_scores, with_open_answers
from train.finetune_vqa import score_summary as vqa_summary
from train.finetune_vqa_data import VQA_COLUMNS, VqaCollator, out_of_vocabulary, split_source, synthcxr_vqa
from train.finetune_vqa_open import (
    MAX_ANSWER_TOKENS,
    OPEN_FOLDER,
    OpenAnswerCollator,
    generate_open_answers,
    open_rows,
)
from train.lora_presets import load_finetuned_model

GENERATOR = "MedVLForConditionalGeneration"
ANSWER_CLASSIFIER = "MedVLForQuestionAnswering"
TASKS = ("auto", "report_generation", "vqa")
EXAMPLES_FILE = "examples.html"
SLAKE_SPLITS = {"valid": "validate", "test": "test"}


def generation_task(folder, task: str) -> str:
    """`task`, or for 'auto' 'vqa' when the generator lies in a VQA run's open-answer folder, else
    'report_generation'."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {list(TASKS)}")
    if task != "auto":
        return task
    return "vqa" if OPEN_FOLDER in Path(folder).resolve().parts[-2:] else "report_generation"


def run_folder(folder, task: str) -> Path:
    """The folder whose run_config.yaml (in it or its parent) names the model's training data: a VQA generator's is
    two levels up."""
    folder = Path(folder)
    return folder.parent if task == "vqa" and OPEN_FOLDER in folder.resolve().parts[-2:] else folder


def load_vqa_split(spec_text: str, split: str, cache_root):
    """The questions to answer (image, question, answer, answer_type); raises naming the source for a missing split
    or column or an empty split."""
    split = check_split(split)
    kind, location = split_source(spec_text)
    if kind == "vqa-rad":
        if split != "test":
            raise ValueError(f"--data {spec_text}: VQA-RAD has train and test questions only (fine-tuning validates on "
                             "a held-out share of train); use --split test")
        dataset = processing.load_vqa_rad(location, split="test")
    elif kind == "slake":
        dataset = processing.load_slake(location, SLAKE_SPLITS[split])
    elif kind == "saved":
        dataset = _saved_split(location, split)
    else:
        dataset = synthcxr_vqa(location, cache_root)
    missing = [name for name in VQA_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ValueError(f"--data {spec_text}: the {split} split has no {missing} column(s) "
                         f"(columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError(f"--data {spec_text}: the {split} split has no questions")
    return dataset.select_columns(list(VQA_COLUMNS))


def load_generation_split(task: str, spec_text: str, split: str, cache_root):
    if task == "vqa":
        return load_vqa_split(spec_text, split, cache_root)
    dataset = load_evaluation_split(spec_text, split, cache_root, columns=("image", "report"))
    with_report = [index for index, report in enumerate(dataset["report"]) if report and report.strip()]
    if not with_report:
        raise ValueError(f"--data {spec_text}: no study of the {split} split has a report")
    return dataset.select(with_report)


def evaluate_reports(model, processor, dataset, args, figures_dir) -> dict:
    images = list(dataset["image"])
    references = normalized_reports(processor, dataset["report"])
    generated = generate_report_texts(model, processor, images, args.max_new_tokens, args.batch_size)
    result = {"num_studies": len(references), "max_new_tokens": args.max_new_tokens, "decoding": "greedy",
              **report_summary(report_scores(generated, references, args.bootstrap_samples, args.seed))}
    shown = min(args.html_examples, len(references))
    if shown:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        page = write_examples_html(Path(figures_dir) / EXAMPLES_FILE, images[:shown], references[:shown],
                                   generated[:shown], title=f"{args.data} ({args.split}): reference and generated "
                                                            "reports")
        result["figures"] = {"examples": str(page)}
    return result


def generated_answers(model, processor, dataset, batch_size: int) -> list:
    collator = OpenAnswerCollator(processor, model.config.text_config.eos_token_id)
    return generate_open_answers(model, collator, dataset, batch_size)


def answer_vocabulary(model) -> list:
    return [model.config.id2label[index] for index in range(model.config.num_labels)]


@torch.no_grad()
def classified_answers(model, processor, dataset, batch_size: int) -> list:
    """The classifier's answer (its most likely vocabulary entry) to every question."""
    model.eval()
    vocabulary = answer_vocabulary(model)
    collator = VqaCollator(processor, vocabulary)
    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[index] for index in range(start, min(start + batch_size, len(dataset)))])
        batch.pop("labels")
        answers += answers_of(model(**{key: value.to(device) for key, value in batch.items()}).logits.cpu(),
                              vocabulary)
    return answers


def open_answers_model(folder):
    """The open-answer generator of the VQA run whose classifier is in `folder`, or None."""
    generator = Path(folder).parent / OPEN_FOLDER / BEST_FOLDER
    return generator if (generator / "config.json").is_file() else None


def evaluate_vqa(model, processor, dataset, args, device: str) -> dict:
    if GENERATOR in (model.config.architectures or []):
        answers, sources = generated_answers(model, processor, dataset, args.batch_size), {"all": "generated"}
        outside = {}
    else:
        answers, sources = classified_answers(model, processor, dataset, args.batch_size), {"all": "classified"}
        # The classifier can never give these: counted wrong, never dropped.
        outside = {"reference_answers_outside_vocabulary": out_of_vocabulary(dataset, answer_vocabulary(model))}
        generator_folder = open_answers_model(args.model)
        if generator_folder is not None:
            generator = load_finetuned_model(generator_folder).to(device)
            generator_processor = load_processor(generator_folder, generator.config.vision_config.image_size)
            opened = open_rows(dataset)
            generated = generated_answers(generator, generator_processor, dataset.select(opened), args.batch_size)
            answers = with_open_answers(answers, opened, generated)
            sources = {"closed": "classified", "open": f"generated by {generator_folder}"}
    scores = vqa_scores(answers, dataset["answer"], dataset["answer_type"], None, args.bootstrap_samples, args.seed)
    rows = zip(dataset["question"], dataset["answer_type"], dataset["answer"], answers)
    skipped = {"bootstrap_skipped": scores["bootstrap_skipped"]} if "bootstrap_skipped" in scores else {}
    return {"num_questions": len(answers), "answered": sources, "max_new_tokens": MAX_ANSWER_TOKENS,
            "decoding": "greedy", **vqa_summary(scores), **skipped, **outside,
            "answers": [{"question": question, "answer_type": kind, "reference": reference, "answer": answer}
                        for question, kind, reference, answer in rows]}


def evaluate_generation(task: str, model, processor, dataset, args, figures_dir, device: str) -> dict:
    model.to(device)
    if task == "vqa":
        return evaluate_vqa(model, processor, dataset, args, device)
    return evaluate_reports(model, processor, dataset, args, figures_dir)


def describe(results: dict) -> str:
    """The headline line of a generation task's results."""
    if results["mode"] == "report_generation":
        return f"report_generation {describe_scores(results)} over {results['num_studies']} studies"
    parts = []
    for label, name in (("accuracy", "accuracy"), ("closed", "closed_accuracy"), ("open", "open_accuracy")):
        interval = results.get(f"{name}_ci")
        parts.append(f"{label} {results[name]:.4f}" + (f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})"
                                                       if interval else ""))
    answered = ", ".join(f"{kind}: {source}" for kind, source in results["answered"].items())
    return (f"vqa {', '.join(parts)} over {results['num_closed']} closed and {results['num_open']} open questions "
            f"(answers {answered})")


__all__ = ["ANSWER_CLASSIFIER", "GENERATOR", "TASKS", "classified_answers", "describe", "evaluate_generation",
           "generated_answers", "generation_task", "load_generation_split", "load_vqa_split", "run_folder"]

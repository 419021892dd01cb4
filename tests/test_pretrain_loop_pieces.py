"""Pieces of the pretraining loop: the process-count-independent global batch order, per-sample
seeded masking, atomic checkpoints, zero-shot metrics and the non-finite-loss guard."""

import json
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from train import checkpointing as ckpt
from train.data_loading import GlobalBatchSampler, mask_rows, parse_data_spec
from train.zero_shot_eval import retrieval_recall, zero_shot_auc


def global_batches(num_rows, micro, processes, accumulation, start_step=0):
    """Rows of each step's global batch as a set, gathered over all ranks' micro-batches."""
    per_rank = [
        list(GlobalBatchSampler(num_rows, micro, processes, rank, accumulation, seed=3, start_step=start_step))
        for rank in range(processes)
    ]
    steps = []
    for step in range(len(per_rank[0]) // accumulation):
        rows = [row for rank in per_rank for micro_batch in rank[step * accumulation : (step + 1) * accumulation]
                for row in micro_batch]
        assert len(rows) == len(set(rows)) == micro * processes * accumulation
        steps.append(set(rows))
    return steps


def test_global_batches_do_not_depend_on_the_process_count():
    one = global_batches(100, micro=8, processes=1, accumulation=4)
    two = global_batches(100, micro=8, processes=2, accumulation=2)
    four = global_batches(100, micro=4, processes=4, accumulation=2)
    assert one == two == four and len(one) == 100 // 32


def test_sampler_resumes_mid_epoch_and_reshuffles_per_epoch():
    assert global_batches(100, 4, 2, 2, start_step=2) == global_batches(100, 4, 2, 2)[2:]
    first = list(GlobalBatchSampler(64, 8, 1, 0, 1, seed=0, epoch=0))
    second = list(GlobalBatchSampler(64, 8, 1, 0, 1, seed=0, epoch=1))
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(64))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(10, 8, 2, 0, 1, seed=0)


def test_masking_of_a_row_ignores_the_padding_around_it():
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 16, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    short_masked, short_labels = mask_rows(ids[:, :9], mask[:, :9], [42], 4, 100, [0, 2, 3, 4], 0.3)
    long_masked, long_labels = mask_rows(ids, mask, [42], 4, 100, [0, 2, 3, 4], 0.3)
    assert torch.equal(long_masked[:, :9], short_masked) and torch.equal(long_labels[:, :9], short_labels)
    assert (long_labels[:, 9:] == -100).all() and (long_labels[0, [0, 8]] == -100).all()
    assert (long_labels != -100).sum() >= 1
    other, _ = mask_rows(ids, mask, [43], 4, 100, [0, 2, 3, 4], 0.3)
    assert not torch.equal(other, long_masked) or not torch.equal(_, long_labels)


@pytest.mark.parametrize("spec", ["mimic", "openi", "synthcxr:n=0", "synthcxr:size=abc", "synthcxr:k=3"])
def test_bad_data_specs_are_named(spec):
    with pytest.raises(ValueError, match="--data"):
        parse_data_spec(spec)


def test_data_spec_forms():
    assert parse_data_spec("wds:/shards/*.tar").location == "/shards/*.tar"
    assert parse_data_spec("synthcxr:n=50,seed=2").options == {"n": 50, "size": 64, "seed": 2}


def test_checkpoints_are_atomic_rotated_and_pointed_to(tmp_path):
    accelerator = Accelerator(cpu=True)

    def write(folder):
        (folder / ckpt.TRAINER_STATE).write_text(json.dumps({"step": 1}))
        for name in (ckpt.OPTIMIZER_STATE, ckpt.SCHEDULER_STATE):
            torch.save({}, folder / name)

    (tmp_path / ".checkpoint-3.tmp").mkdir()  # debris of a run killed while writing
    for step in (1, 2, 3):
        ckpt.save_checkpoint(accelerator, tmp_path, step, write, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-2", "checkpoint-3", "checkpoint-last"]
    assert ckpt.resolve_checkpoint(tmp_path / "checkpoint-last") == (tmp_path / "checkpoint-3").resolve()
    assert (tmp_path / "checkpoint-3" / "rng_state_0.pt").is_file()
    (tmp_path / "checkpoint-2" / ckpt.OPTIMIZER_STATE).unlink()
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError):
        ckpt.resolve_checkpoint(tmp_path / "checkpoint-9")


def test_rng_state_round_trip():
    state = ckpt.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(), __import__("random").random())
    ckpt.restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_retrieval_recall_counts_identical_reports_as_hits():
    images = np.eye(4)
    texts = np.eye(4)[[1, 0, 2, 3]]  # images 0 and 1 retrieve each other's report first
    reports = ["a", "b", "c", "d"]
    results = retrieval_recall(images, texts, reports, ks=(1, 2))
    assert results["recall@1"] == 0.5 and results["recall@2"] == 1.0
    assert results["chance_recall@1"] == pytest.approx(0.25) and results["chance_recall@2"] == pytest.approx(0.5)
    same = retrieval_recall(images, texts, ["a", "a", "c", "d"], ks=(1,))
    assert same["recall@1"] == 1.0 and same["chance_recall@1"] == pytest.approx((2 + 2 + 1 + 1) / 16)


def test_zero_shot_auc_skips_uncertain_and_blank_labels():
    images = np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0], [1.0, 0.0]])
    positive, negative = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    labels = np.array([[1.0], [1.0], [0.0], [0.0], [np.nan]])
    assert zero_shot_auc(images, positive, negative, labels, ["Edema"])["zero_shot_auc"] == 1.0
    labels[4, 0] = -1.0  # uncertain: left out, not counted as negative
    assert zero_shot_auc(images, positive, negative, labels, ["Edema"])["zero_shot_auc"] == 1.0
    flipped = zero_shot_auc(images, negative, positive, labels, ["Edema"])
    assert flipped["zero_shot_auc"] == 0.0
    assert math.isnan(zero_shot_auc(images, positive, negative, np.ones((5, 1)), ["Edema"])["zero_shot_auc"])


def test_zero_shot_scores_are_p_positive_from_the_pair():
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    positive, negative = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    result = zero_shot_auc(images, positive, negative, np.array([[1.0], [0.0]]), ["Edema"], logit_scale=10.0)
    expected = np.exp(10.0) / (np.exp(10.0) + np.exp(0.0))
    np.testing.assert_allclose(result["zero_shot_scores"][:, 0], [expected, 1.0 - expected])


def test_versioned_prompts_cover_every_label_with_ensembles(tmp_path):
    from processing.chexpert import CHEXPERT_LABELS
    from train.zero_shot_eval import load_prompts

    prompts = load_prompts()
    assert prompts["version"] == "4"
    assert set(prompts["labels"]) == set(CHEXPERT_LABELS)
    for label, (positive, negative) in prompts["labels"].items():
        assert positive and negative and not set(positive) & set(negative), label
    # Side-specific findings name both sides, so neither side is favoured.
    for label in ("Pleural Effusion", "Pneumothorax", "Consolidation"):
        positive = " ".join(prompts["labels"][label][0])
        assert "left" in positive and "right" in positive, label
    custom = tmp_path / "prompts.yaml"
    custom.write_text("version: site-3\nlabels:\n  Edema: {positive: [Edema.], negative: [No edema.]}\n")
    mine = load_prompts(custom)
    assert mine["labels"]["Edema"] == (["Edema."], ["No edema."]) and mine["version"] == "site-3 (on default 4)"
    assert mine["labels"]["Cardiomegaly"] == prompts["labels"]["Cardiomegaly"]
    assert mine["laterality"] == prompts["laterality"]
    custom.write_text("laterality:\n  Pneumothorax: {left: [Left PTX.], right: [Right PTX.]}\n")
    assert load_prompts(custom)["laterality"]["Pneumothorax"] == (["Left PTX."], ["Right PTX."])
    custom.write_text("laterality:\n  Pneumothorax: {left: [Left PTX.]}\n")
    with pytest.raises(ValueError, match="non-empty right"):
        load_prompts(custom)
    custom.write_text("labels:\n  Edemaa: [a, b]\n")
    with pytest.raises(ValueError, match="unknown label 'Edemaa'"):
        load_prompts(custom)
    custom.write_text("labels:\n  Edema: {positive: [], negative: [b]}\n")
    with pytest.raises(ValueError, match="non-empty positive"):
        load_prompts(custom)


def test_prompt_ensembles_average_their_phrasings(monkeypatch):
    import train.zero_shot_eval as zero_shot_eval

    table = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0]) / np.sqrt(2)}
    monkeypatch.setattr(zero_shot_eval, "embed_texts",
                        lambda model, processor, texts, max_length, device: np.stack([table[t] for t in texts]))
    means = zero_shot_eval.embed_prompt_ensembles(None, None, [["a", "b"], ["c"]])
    np.testing.assert_allclose(means, [table["c"], table["c"]], atol=1e-12)

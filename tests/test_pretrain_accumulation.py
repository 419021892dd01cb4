"""The exact-accumulation step equals one large batch: 4 micro-batches in one process, and 2
processes x 2 micro-batches under a real `accelerate launch` (gloo on CPU) - loss, each term and
every gradient, the temperature's included - with the CLIP target and with the label-aware one."""

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from modeling_medvl import MedVLConfig, MedVLForPreTraining, contrastive_loss
from processing.augmentation import JointAugmentation
from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer
from train import contrastive_accumulation
from train.contrastive_accumulation import ExactAccumulationStep
from train.data_loading import PretrainCollator
from train.pretrain_setup import build_processor, token_ids

from helpers import launch_two_processes

SCRIPT = Path(__file__).resolve().parent / "scripts" / "pretrain_accumulated_step.py"
GLOBAL_BATCH = 16
ATOL, RTOL = 1e-6, 1e-4


def split(batch, size):
    rows = batch["pixel_values"].shape[0]
    return [{key: value[start : start + size] for key, value in batch.items()} for start in range(0, rows, size)]


def gradients(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module", params=["pair", "label_aware"])
def fixture_dir(tmp_path_factory, request):
    """A tiny model (ITM off: its negatives are sampled per batch) and one collated global batch whose rows carry
    their labels (normal studies share a match group)."""
    folder = tmp_path_factory.mktemp(f"accumulation-{request.param}")
    studies = list(generate_synthcxr(GLOBAL_BATCH, size=64, seed=5))
    tokenizer = train_clinical_tokenizer([study.report for study in studies], vocab_size=400)
    processor = build_processor(tokenizer, image_size=64)
    collator = PretrainCollator(processor, JointAugmentation(), mlm_probability=0.15, max_length=128, seed=0)
    rows = [{"image": s.image, "report": s.report, "labels": s.labels} for s in studies]
    batch = collator(list(enumerate(rows)))
    # Shared groups in both halves and across them: the soft targets span micro-batches and ranks.
    groups = batch["match_groups"].tolist()
    assert len(set(groups)) < GLOBAL_BATCH and set(groups[: GLOBAL_BATCH // 2]) & set(groups[GLOBAL_BATCH // 2 :])
    torch.save(batch, folder / "global_batch.pt")
    torch.manual_seed(0)
    config = MedVLConfig.from_preset(
        "tiny", text_config=token_ids(tokenizer), itm_weight=0.0, mlm_weight=0.5, contrastive_targets=request.param
    )
    MedVLForPreTraining(config).save_pretrained(folder / "model")
    return folder


def large_batch_reference(fixture_dir):
    model = MedVLForPreTraining.from_pretrained(fixture_dir / "model")
    batch = torch.load(fixture_dir / "global_batch.pt", weights_only=True)
    outputs = model(**batch, return_loss=True)
    outputs.loss.backward()
    terms = {name: float(value.detach()) for name, value in outputs.loss_terms.items()}
    return float(outputs.loss.detach()), terms, gradients(model)


def accumulated(fixture_dir, micro_batch_size):
    model = MedVLForPreTraining.from_pretrained(fixture_dir / "model")
    batch = torch.load(fixture_dir / "global_batch.pt", weights_only=True)
    config = model.config
    weights = {"itc": config.itc_weight, "mlm": config.mlm_weight, "itm": config.itm_weight}
    label_aware = config.contrastive_targets == "label_aware"
    losses = ExactAccumulationStep(Accelerator(cpu=True), contrastive_loss, weights, label_aware_itc=label_aware)(
        model, split(batch, micro_batch_size)
    )
    return losses, gradients(model)


def assert_same_step(loss, terms, grads, reference):
    ref_loss, ref_terms, ref_grads = reference
    assert loss == pytest.approx(ref_loss, rel=RTOL)
    assert set(terms) == set(ref_terms) == {"itc", "mlm"}
    for name, value in ref_terms.items():
        assert terms[name] == pytest.approx(value, rel=RTOL), name
    assert set(grads) == set(ref_grads)
    assert any("logit_scale" in name for name in ref_grads)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=ATOL, rtol=RTOL, msg=name)


def test_four_micro_batches_equal_one_large_batch(fixture_dir):
    losses, grads = accumulated(fixture_dir, GLOBAL_BATCH // 4)
    assert_same_step(losses.loss, losses.terms, grads, large_batch_reference(fixture_dir))


def test_single_micro_batch_path_equals_the_model_loss(fixture_dir):
    losses, grads = accumulated(fixture_dir, GLOBAL_BATCH)
    assert_same_step(losses.loss, losses.terms, grads, large_batch_reference(fixture_dir))


def test_micro_batches_mask_different_token_counts(fixture_dir):
    """The MLM term's token weighting is exercised: the micro-batches' masked counts differ."""
    batch = torch.load(fixture_dir / "global_batch.pt", weights_only=True)
    counts = {int((micro["mlm_labels"] != -100).sum()) for micro in split(batch, GLOBAL_BATCH // 4)}
    assert len(counts) > 1


def dropout_model_and_batch(fixture_dir):
    config = MedVLConfig.from_pretrained(fixture_dir / "model")
    config.text_config.hidden_dropout_prob = 0.3
    model = MedVLForPreTraining.from_pretrained(fixture_dir / "model", config=config)
    model.train()
    return model, split(torch.load(fixture_dir / "global_batch.pt", weights_only=True), GLOBAL_BATCH // 4)


def test_replay_is_checked_against_the_cache(fixture_dir, monkeypatch, caplog):
    """With dropout on, pass 2 reproduces pass 1 only because each micro-batch's RNG state is restored; a replay
    that differs is measured relative to the embeddings, warned about and reported, and the step goes on."""
    model, batch = dropout_model_and_batch(fixture_dir)
    step = ExactAccumulationStep(Accelerator(cpu=True), contrastive_loss, {"itc": 1.0, "mlm": 0.5})
    assert step.replay_tolerance == contrastive_accumulation.REPLAY_TOLERANCE["no"]
    reproduced = step(model, batch)
    assert reproduced.finite and reproduced.replay_error < 1e-6
    monkeypatch.setattr(contrastive_accumulation, "_restore_torch_rng_state", lambda state: None)
    with caplog.at_level("WARNING", logger="medvl.pretrain"):
        diverged = step(model, batch)
    # A lost RNG state (dropout redrawn) stands out even against the loosest, bf16 tolerance.
    assert diverged.finite and diverged.replay_error > contrastive_accumulation.REPLAY_TOLERANCE["bf16"]
    assert any("replay differs" in record.getMessage() and "relative" in record.getMessage()
               for record in caplog.records)


def test_replay_tolerance_follows_the_precision():
    assert (contrastive_accumulation.REPLAY_TOLERANCE["no"] < contrastive_accumulation.REPLAY_TOLERANCE["fp16"]
            < contrastive_accumulation.REPLAY_TOLERANCE["bf16"])
    bf16 = SimpleNamespace(mixed_precision="bf16", num_processes=1)  # accelerate's state is one per process
    step = ExactAccumulationStep(bf16, contrastive_loss, {"itc": 1.0})
    assert step.replay_tolerance == contrastive_accumulation.REPLAY_TOLERANCE["bf16"]
    cached = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    # Relative: the same perturbation weighs the same whatever the embeddings' scale.
    noise = 1e-3 * torch.randn(8, 16)
    assert contrastive_accumulation.relative_replay_error(cached + noise, cached) == pytest.approx(
        float(contrastive_accumulation.relative_replay_error(100 * (cached + noise), 100 * cached)), rel=1e-4)


def test_only_one_micro_batch_is_on_the_device_at_a_time(fixture_dir):
    """The global batch stays on the host; each micro-batch moves (a real copy here, as to a GPU) when it is used
    and is freed before the next one moves."""
    model = MedVLForPreTraining.from_pretrained(fixture_dir / "model")
    micro_batches = split(torch.load(fixture_dir / "global_batch.pt", weights_only=True), GLOBAL_BATCH // 4)
    config = model.config
    step = ExactAccumulationStep(
        Accelerator(cpu=True), contrastive_loss, {"itc": config.itc_weight, "mlm": config.mlm_weight},
        label_aware_itc=config.contrastive_targets == "label_aware",
    )
    moved, alive_at_move = [], []

    def copying_move(micro_batch):
        gc.collect()
        alive_at_move.append(sum(ref() is not None for ref in moved))
        copy = {key: value.clone() for key, value in micro_batch.items()}
        moved.extend(weakref.ref(value) for value in copy.values())
        return copy

    step.to_device = copying_move
    reference = large_batch_reference(fixture_dir)
    losses = step(model, micro_batches)
    assert len(alive_at_move) == 2 * len(micro_batches)  # each micro-batch moves once per pass
    assert alive_at_move == [0] * len(alive_at_move), alive_at_move
    assert_same_step(losses.loss, losses.terms, gradients(model), reference)


@pytest.mark.parametrize("micro_batch_size", [GLOBAL_BATCH // 4, GLOBAL_BATCH])
def test_mlm_counts_the_tokens_the_model_masks_itself(fixture_dir, micro_batch_size):
    """Without mlm_labels in the batch the model masks input_ids itself: MLM still gets its token-weighted share
    (counted from the model's outputs), its value and its gradient."""
    model = MedVLForPreTraining.from_pretrained(fixture_dir / "model")
    batch = torch.load(fixture_dir / "global_batch.pt", weights_only=True)
    del batch["mlm_input_ids"], batch["mlm_labels"]
    config = model.config
    step = ExactAccumulationStep(
        Accelerator(cpu=True), contrastive_loss, {"itc": config.itc_weight, "mlm": config.mlm_weight},
        label_aware_itc=config.contrastive_targets == "label_aware",
    )
    seen, forward = [], model.forward

    def recording_forward(*args, **kwargs):
        outputs = forward(*args, **kwargs)
        if torch.is_grad_enabled() and outputs.loss_terms and "mlm" in outputs.loss_terms:
            seen.append((int((outputs.mlm_labels != -100).sum()), float(outputs.loss_terms["mlm"].detach())))
        return outputs

    model.forward = recording_forward
    losses = step(model, split(batch, micro_batch_size))
    assert len(seen) == GLOBAL_BATCH // micro_batch_size and sum(count for count, _ in seen) > 0
    token_mean = sum(count * value for count, value in seen) / sum(count for count, _ in seen)
    assert losses.terms["mlm"] == pytest.approx(token_mean, rel=RTOL)
    mlm_head_grads = [p.grad for name, p in model.named_parameters() if name.startswith("mlm_head.")]
    assert mlm_head_grads and all(g is not None and g.abs().sum() > 0 for g in mlm_head_grads)


@pytest.mark.slow
def test_two_processes_equal_one_large_batch(fixture_dir, tmp_path):
    output = tmp_path / "two_process_step.pt"
    result = launch_two_processes(SCRIPT, fixture_dir, output, GLOBAL_BATCH // 4)
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    step = torch.load(output, weights_only=True)
    assert step["num_processes"] == 2 and step["micro_batches"] == 2
    assert_same_step(step["loss"], step["terms"], step["gradients"], large_batch_reference(fixture_dir))

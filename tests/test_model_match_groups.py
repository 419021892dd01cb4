"""Match groups: rows that say the same thing (same findings, or the same normalised report) are never ITM
negatives of each other, and are shared soft targets of the label-aware contrastive loss."""

import pytest
import torch

from modeling_medvl import MedVLConfig, MedVLForPreTraining, contrastive_loss
from modeling_medvl.losses_medvl import sample_hard_negatives
from train.data_loading import match_group_id


def normalised(rows, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)


def test_distinct_groups_give_the_clip_loss():
    image, text = normalised(6), normalised(6, seed=1)
    scale = torch.tensor(15.0)
    assert torch.allclose(
        contrastive_loss(image, text, scale, match_groups=torch.arange(6) * 7), contrastive_loss(image, text, scale)
    )


def test_shared_groups_spread_the_target_over_their_members():
    image, text = normalised(4), normalised(4, seed=1)
    scale = torch.tensor(10.0)
    groups = torch.tensor([5, 9, 5, 5])
    logits = scale * image @ text.t()
    expected = 0.0
    for matrix in (logits, logits.t()):
        log_probabilities = matrix.log_softmax(dim=1)
        for row in range(4):
            members = [col for col in range(4) if groups[col] == groups[row]]
            expected += -sum(log_probabilities[row, col] for col in members) / len(members) / 4
    loss = contrastive_loss(image, text, scale, match_groups=groups)
    assert loss.item() == pytest.approx(expected.item() / 2, rel=1e-6)


def test_match_groups_must_be_one_integer_id_per_row():
    image, text = normalised(4), normalised(4, seed=1)
    with pytest.raises(ValueError, match="match_groups"):
        contrastive_loss(image, text, torch.tensor(10.0), match_groups=torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="match_groups"):
        contrastive_loss(image, text, torch.tensor(10.0), match_groups=torch.tensor([0, 1]))


def test_hard_negatives_never_come_from_the_anchor_group():
    similarity = torch.randn(8, 8)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    same = groups[:, None] == groups[None, :]
    for seed in range(20):
        image_rows, negative_texts, text_rows, negative_images = sample_hard_negatives(
            similarity, same, torch.Generator().manual_seed(seed)
        )
        assert not same[image_rows, negative_texts].any() and not same[text_rows, negative_images].any()


def tiny_pretraining(**overrides):
    torch.manual_seed(0)
    return MedVLForPreTraining(MedVLConfig.from_preset("tiny", mlm_weight=0.0, **overrides)).eval()


def test_itm_pairs_respect_match_groups():
    model = tiny_pretraining()
    input_ids = torch.randint(4, 1000, (4, 9))
    pixel_values = torch.randn(4, 3, 64, 64)
    # Rows 0-2 say the same thing in different words, row 3 differs: each anchor still has a negative.
    output = model(input_ids, pixel_values, match_groups=torch.tensor([11, 11, 11, 42]), loss_terms="itm")
    assert output.itm_labels.tolist() == [1] * 4 + [0] * 8
    # One group for all: no negative exists, and the term is skipped rather than trained on false negatives.
    output = model(input_ids, pixel_values, match_groups=torch.tensor([11, 11, 11, 11]), loss_terms="itm")
    assert output.itm_logits is None and output.loss is None
    groups = torch.tensor([11, 11, 11, 42])
    with pytest.raises(ValueError, match="one id per row"):
        model(input_ids, pixel_values, match_groups=groups[:3], loss_terms="itm")


def test_label_aware_itc_needs_groups_and_uses_them():
    model = tiny_pretraining(contrastive_targets="label_aware", itm_weight=0.0)
    input_ids = torch.randint(4, 1000, (4, 9))
    pixel_values = torch.randn(4, 3, 64, 64)
    with pytest.raises(ValueError, match="needs match_groups"):
        model(input_ids, pixel_values)
    groups = torch.tensor([1, 1, 2, 3])
    output = model(input_ids, pixel_values, match_groups=groups)
    expected = contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale, match_groups=groups)
    assert torch.allclose(output.loss_terms["itc"], expected)


def test_group_ids_follow_findings_and_wording():
    normal = {"No Finding": 1, "Edema": 0}
    assert match_group_id(normal, "The lungs are clear.") == match_group_id({"No Finding": 1}, "Normal study.")
    effusion = {"Pleural Effusion": 1}
    assert match_group_id(effusion, "Left effusion.") != match_group_id(normal, "Left effusion.")
    # The side a report states splits a group (a flipped study is another study), its wording does not.
    assert match_group_id(effusion, "Small left pleural effusion.") == match_group_id(effusion, "L effusion.")
    assert match_group_id(effusion, "Small left pleural effusion.") != match_group_id(effusion, "Right effusion.")
    assert match_group_id({"Pleural Effusion": -1}, "x") != match_group_id(effusion, "x")
    # Without labels: the report after lower-casing and dropping punctuation.
    assert match_group_id(None, "No acute process.") == match_group_id({}, "no  acute process")
    assert match_group_id(None, "Left effusion.") != match_group_id(None, "Right effusion.")
    assert 0 <= match_group_id(None, "x") < 2**63

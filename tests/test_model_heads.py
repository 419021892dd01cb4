"""MedVL task heads: classification (multi-label / multi-class), question answering, report generation."""

import pytest
import torch
from helpers import tiny_config

from modeling_medvl import (
    MedVLForConditionalGeneration,
    MedVLForImageClassification,
    MedVLForQuestionAnswering,
)


def test_multi_label_classification_ignores_unknown_entries():
    model = MedVLForImageClassification(tiny_config(num_labels=4)).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1.0, 0.0, -100.0, 1.0], [0.0, -100.0, -100.0, 1.0]])
    output = model(pixel_values=pixel_values, labels=labels)
    assert model.config.problem_type == "multi_label_classification"
    known = labels != -100
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits[known], labels[known])
    assert torch.allclose(output.loss, expected, atol=1e-6)


def test_multi_class_classification_uses_cross_entropy():
    model = MedVLForImageClassification(tiny_config(num_labels=3)).eval()
    labels = torch.tensor([2, 0])
    output = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    assert model.config.problem_type == "single_label_classification"
    assert torch.allclose(output.loss, torch.nn.functional.cross_entropy(output.logits, labels), atol=1e-6)


def test_classification_learns_a_trivial_task():
    """Bright images are class 1, dark ones class 0: the loss must fall well below chance in a few steps."""
    torch.manual_seed(0)
    model = MedVLForImageClassification(tiny_config(num_labels=2, vision_config={"image_size": 32}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.tensor([0, 1] * 4)
    pixel_values = torch.randn(8, 3, 32, 32) * 0.3 + (labels.float() * 2 - 1)[:, None, None, None]
    losses = []
    for _ in range(15):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 < losses[0]
    model.eval()
    with torch.no_grad():
        test_labels = torch.tensor([1, 0, 1, 0])
        test_images = torch.randn(4, 3, 32, 32) * 0.3 + (test_labels.float() * 2 - 1)[:, None, None, None]
        assert torch.equal(model(pixel_values=test_images).logits.argmax(-1), test_labels)


def test_heads_that_read_images_refuse_missing_pixel_values():
    input_ids = torch.randint(4, 1000, (2, 6))
    with pytest.raises(ValueError, match="pixel_values"):
        MedVLForImageClassification(tiny_config(num_labels=2))(labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pixel_values"):
        MedVLForQuestionAnswering(tiny_config(num_labels=5))(input_ids=input_ids)
    with pytest.raises(ValueError, match="pixel_values"):
        MedVLForConditionalGeneration(tiny_config())(input_ids=input_ids)


@pytest.mark.parametrize("fusion_type", ["cross_attention", "merged", "none"])
def test_question_answering_takes_answer_indices_or_soft_scores(fusion_type):
    config = tiny_config(num_labels=5, fusion_type=fusion_type, itm_weight=0.0)
    model = MedVLForQuestionAnswering(config).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    input_ids = torch.randint(4, 1000, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    hard = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                 labels=torch.tensor([4, 1]))
    assert hard.logits.shape == (2, 5)
    assert torch.allclose(hard.loss, torch.nn.functional.cross_entropy(hard.logits, torch.tensor([4, 1])), atol=1e-6)
    scores = torch.zeros(2, 5)
    scores[0, 4], scores[1, 1], scores[1, 2] = 1.0, 0.6, 0.3
    soft = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=scores)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(soft.logits, scores) * 5
    assert torch.allclose(soft.loss, expected, atol=1e-6)
    with pytest.raises(ValueError, match="soft answer scores|Soft answer scores"):
        model(pixel_values=pixel_values, input_ids=input_ids, labels=scores[:, :3])


def test_report_generation_loss_predicts_the_next_token():
    model = MedVLForConditionalGeneration(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    input_ids = torch.randint(4, 1000, (2, 8))
    labels = input_ids.clone()
    labels[1, 5:] = -100
    output = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        output.logits[:, :-1].reshape(-1, 1000), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(output.loss, expected, atol=1e-6)
    assert model.lm_head.decoder.weight is model.decoder.embeddings.word_embeddings.weight


def test_generate_continues_a_prompt_and_the_cache_changes_nothing():
    model = MedVLForConditionalGeneration(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    prompt = torch.tensor([[1, 40, 41], [1, 50, 51]])
    cached = model.generate(pixel_values=pixel_values, input_ids=prompt, max_new_tokens=6, do_sample=False)
    uncached = model.generate(pixel_values=pixel_values, input_ids=prompt, max_new_tokens=6, do_sample=False,
                              use_cache=False)
    assert cached.shape == (2, 9)
    assert torch.equal(cached[:, :3], prompt)
    assert torch.equal(cached, uncached)
    # Greedy decoding picks the argmax of a full forward pass at every step.
    with torch.no_grad():
        logits = model(pixel_values=pixel_values, input_ids=cached[:, :-1]).logits
    assert torch.equal(logits[:, 2:].argmax(-1), cached[:, 3:])


def test_generate_without_a_prompt_starts_from_the_start_token():
    model = MedVLForConditionalGeneration(tiny_config()).eval()
    generated = model.generate(pixel_values=torch.randn(3, 3, 64, 64), max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 3
    assert (generated[:, 0] == model.config.text_config.bos_token_id).all()


def test_batched_generation_with_left_padded_prompts_matches_one_by_one():
    model = MedVLForConditionalGeneration(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    prompts = [torch.tensor([[1, 40, 41, 42]]), torch.tensor([[1, 50]])]
    batch_ids = torch.tensor([[1, 40, 41, 42], [0, 0, 1, 50]])
    batch_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    batched = model.generate(pixel_values=pixel_values, input_ids=batch_ids, attention_mask=batch_mask,
                             max_new_tokens=4, do_sample=False)
    for row, prompt in enumerate(prompts):
        alone = model.generate(pixel_values=pixel_values[row : row + 1], input_ids=prompt, max_new_tokens=4,
                               do_sample=False)
        assert torch.equal(batched[row, -4:], alone[0, -4:])

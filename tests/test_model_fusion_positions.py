"""MLM and ITM read the fused text at a few positions (the masked tokens, the first token), so the last fusion layer
computes only those. The results must equal fusing every position and picking afterwards: forward and gradients,
for both fusion types, padded rows, eager and SDPA attention."""

import pytest
import torch

from modeling_medvl import MedVLConfig, MedVLForPreTraining
from modeling_medvl.pretraining_medvl import masked_positions


def make_inputs(batch=4, length=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 1000, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row, real in enumerate([12, 7, 9, 12][:batch]):
        attention_mask[row, real:] = 0
        input_ids[row, real:] = 0
    labels = torch.full_like(input_ids, -100)
    for row, picked in enumerate([[1, 4, 5], [2], [], [3, 8, 9, 10, 11]][:batch]):
        labels[row, picked] = input_ids[row, picked]
    masked = torch.where(labels == -100, input_ids, torch.full_like(input_ids, 4))
    pixel_values = torch.randn(batch, 3, 64, 64, generator=generator)
    return pixel_values, input_ids, attention_mask, masked, labels


def test_masked_positions_keep_text_order_and_pad_with_ignored_labels():
    labels = torch.tensor([[-100, 7, -100, 9], [-100, -100, -100, -100], [5, -100, -100, 6]])
    positions, picked = masked_positions(labels)
    assert positions.tolist() == [[1, 3], [0, 0], [0, 3]]
    assert picked.tolist() == [[7, 9], [-100, -100], [5, 6]]
    positions, picked = masked_positions(torch.full((2, 3), -100))
    assert positions.shape == (2, 1) and (picked == -100).all()


@pytest.mark.parametrize("fusion_type", ["cross_attention", "merged"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_fusion_at_positions_equals_full_fusion_then_gather(fusion_type, attn_implementation):
    torch.manual_seed(0)
    config = MedVLConfig.from_preset("tiny", fusion_type=fusion_type, num_fusion_layers=2)
    config._attn_implementation = attn_implementation
    model = MedVLForPreTraining(config).eval()
    pixel_values, input_ids, attention_mask, _, _ = make_inputs()
    encoding = model.medvl.encode(input_ids, pixel_values, attention_mask)
    text_states = encoding.text_states.detach().requires_grad_(True)
    positions = torch.tensor([[0, 3, 11], [0, 1, 6], [2, 2, 8], [11, 0, 5]])

    full = model.medvl.fusion(text_states, attention_mask, encoding.image_tokens)
    expected = full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1]))
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), text_states)
    picked = model.medvl.fusion(text_states, attention_mask, encoding.image_tokens, query_index=positions)
    (picked_grad,) = torch.autograd.grad(picked.square().sum(), text_states)
    torch.testing.assert_close(picked, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(picked_grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion_type", ["cross_attention", "merged"])
def test_mlm_and_itm_losses_equal_the_full_computation(fusion_type):
    torch.manual_seed(0)
    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny", fusion_type=fusion_type, num_fusion_layers=2)).eval()
    pixel_values, input_ids, attention_mask, masked, labels = make_inputs()
    output = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                   mlm_input_ids=masked, mlm_labels=labels, loss_terms=("mlm",))

    medvl = model.medvl
    encoding = medvl.encode(input_ids, pixel_values, attention_mask)
    masked_states = medvl.text_model(input_ids=masked, attention_mask=attention_mask).last_hidden_state
    full_logits = model.mlm_head(medvl.fuse(masked_states, attention_mask, encoding.image_tokens))
    expected = torch.nn.functional.cross_entropy(full_logits.reshape(-1, full_logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(output.loss_terms["mlm"], expected, atol=1e-5, rtol=1e-5)
    rows, columns = (labels != -100).nonzero(as_tuple=True)
    kept = output.mlm_labels != -100
    torch.testing.assert_close(output.mlm_logits[kept], full_logits[rows, columns], atol=1e-5, rtol=1e-5)

    generator_state = torch.random.get_rng_state()
    itm = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, loss_terms=("itm",))
    torch.random.set_rng_state(generator_state)
    # The same hard negatives, fused at every position and read at the first token.
    from modeling_medvl.losses_medvl import sample_hard_negatives
    logits = medvl.clamped_logit_scale() * encoding.image_embeds @ encoding.text_embeds.t()
    same = (input_ids.masked_fill(attention_mask == 0, -1)[:, None] == input_ids.masked_fill(attention_mask == 0, -1)[None]).all(-1)
    image_rows, negative_texts, text_rows, negative_images = sample_hard_negatives(logits, same)
    batch = torch.arange(input_ids.shape[0])
    image_index = torch.cat([batch, image_rows, negative_images])
    text_index = torch.cat([batch, negative_texts, text_rows])
    fused = medvl.fuse(encoding.text_states[text_index], attention_mask[text_index], encoding.image_tokens[image_index])
    torch.testing.assert_close(itm.itm_logits, model.itm_head(fused[:, 0]), atol=1e-5, rtol=1e-5)

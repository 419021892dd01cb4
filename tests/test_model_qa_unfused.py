"""The question-answering head without fusion layers (fusion_type="none", the ablation's unfused cell): it answers from
the concatenated projected image and question embeddings, and every parameter it reads is trained. (transformers'
common tests run the head with fusion layers only, and switch their all-parameters-get-gradients check off for it.)"""

import torch
from helpers import PAD, text_batch, tiny_config

from modeling_medvl import MedVLForQuestionAnswering

ANSWERS = 5


def unfused_answerer():
    torch.manual_seed(0)
    return MedVLForQuestionAnswering(tiny_config(fusion_type="none", itm_weight=0.0, num_labels=ANSWERS))


def test_every_parameter_but_the_temperature_gets_a_gradient():
    model = unfused_answerer().train()
    assert model.medvl.fusion is None
    pixel_values, input_ids, attention_mask = text_batch(batch=3)
    output = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                   labels=torch.tensor([0, 3, 4]))
    output.loss.backward()
    missing = [name for name, parameter in model.named_parameters()
               if parameter.grad is None or not parameter.grad.abs().sum() > 0]
    # The contrastive temperature only scales image-text similarities, which answering does not compute.
    assert missing == ["medvl.logit_scale"]


def test_answers_read_the_projected_embeddings_and_ignore_padding():
    model = unfused_answerer().eval()
    pixel_values, input_ids, attention_mask = text_batch(batch=3)
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask).logits
        encoding = model.medvl.encode(input_ids, pixel_values, attention_mask)
        representation = torch.cat([encoding.vision_model_output.pooler_output,
                                    encoding.text_model_output.pooler_output], dim=-1)
        assert representation.shape == (3, 2 * model.config.projection_dim)
        torch.testing.assert_close(logits, model.answer_head(representation))
        # Other token ids under the padding change nothing.
        repadded = torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, PAD + 7))
        torch.testing.assert_close(model(input_ids=repadded, pixel_values=pixel_values,
                                         attention_mask=attention_mask).logits, logits)


def test_it_fits_a_small_batch():
    model = unfused_answerer().train()
    pixel_values, input_ids, attention_mask = text_batch(batch=4, lengths=(10, 6, 8, 7))
    labels = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                     labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask).logits
    assert losses[-1] < 0.2 * losses[0] and predicted.argmax(-1).tolist() == labels.tolist()

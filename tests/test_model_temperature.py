"""The learned temperature stays trainable at its limit: the parameter is clamped after each optimiser step
(`clamp_logit_scale_`), the forward only guards the value, so a run that drives it to the limit brings it back
down as soon as the loss asks for a softer distribution."""

import math

import torch

from modeling_medvl import MedVLConfig, MedVLForPreTraining


def test_temperature_pushed_to_its_limit_comes_back_down_when_the_loss_asks():
    torch.manual_seed(0)
    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny", logit_scale_max=20.0)).train()
    limit = torch.tensor(math.log(20.0)).item()  # as float32 holds it
    optimizer = torch.optim.AdamW([model.medvl.logit_scale], lr=0.3, weight_decay=0.0)
    pixel_values = torch.randn(4, 3, 64, 64)
    input_ids = torch.randint(4, 1000, (4, 8))

    def step(sign: float) -> float:
        output = model(input_ids=input_ids, pixel_values=pixel_values, loss_terms=("itc",))
        (sign * output.logit_scale).backward()  # -1: the loss wants a sharper distribution, +1: a softer one
        optimizer.step()
        optimizer.zero_grad()
        model.clamp_logit_scale_()
        return model.medvl.logit_scale.item()

    values = [step(-1.0) for _ in range(30)]
    assert values[-1] == limit and max(values) <= limit, "the parameter never leaves its range"
    back = [step(+1.0) for _ in range(20)]  # Adam's momentum first turns round
    assert back[-1] < limit - 0.5, f"stuck at the limit: {back}"
    output = model(input_ids=input_ids, pixel_values=pixel_values, loss_terms=("itc",))
    assert output.logit_scale.item() < 20.0 * math.exp(-0.5)


def test_forward_guards_a_parameter_set_above_the_limit():
    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        model.medvl.logit_scale.fill_(10.0)
    output = model(input_ids=torch.randint(4, 1000, (2, 6)), pixel_values=torch.randn(2, 3, 64, 64),
                   loss_terms=("itc",))
    assert abs(output.logit_scale.item() - 100.0) < 1e-4
    model.clamp_logit_scale_()
    assert model.medvl.logit_scale.item() == torch.tensor(math.log(100.0)).item()

"""`trainer.layers.Dropout`: Keras's inverted dropout, its masks drawn from 32 random bits each."""

from __future__ import annotations

import math
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
import torch

from trainer.layers import (
    Dropout,
    dropout_bits,
    dropout_noise,
    dropout_scaled,
    dropout_threshold,
    dropout_words,
)
from trainer.models import MLP
from trainer.networks import NetworkConfig


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_rate_independently(rate: float) -> None:
    """Over a million elements the dropped share is `rate` within 5 standard errors, for the
    elements drawn from each quarter of a 64-bit word alike (a quarter with a constant bit
    would be off), and neighbouring elements are uncorrelated."""
    generator = torch.Generator().manual_seed(3)
    count = 1_000_000
    noise = dropout_noise((count,), rate, generator=generator)
    dropped = (noise == 0).double()
    tolerance = 5 * math.sqrt(rate * (1 - rate) / (count / 4))
    for quarter in range(4):
        assert dropped[quarter::4].mean().item() == pytest.approx(rate, abs=tolerance)
    correlation = torch.corrcoef(torch.stack([dropped[:-1], dropped[1:]]))[0, 1].item()
    assert abs(correlation) < 5 / math.sqrt(count)


def test_kept_units_are_scaled_by_one_over_one_minus_rate_as_keras_does() -> None:
    """Keras's `Dropout(rate)`: the kept units are `x / (1 - rate)`, the rest 0; checked
    against `keras.layers.Dropout` itself on the units both kept."""
    rate = 0.3
    x = torch.linspace(-3.0, 3.0, 4096).reshape(64, 64)
    torch.manual_seed(0)
    ours = Dropout(rate).train()(x)
    output = keras.layers.Dropout(rate)(keras.ops.convert_to_tensor(x.numpy()), training=True)
    assert isinstance(output, torch.Tensor)  # the torch backend's tensors
    theirs = output.detach().cpu().numpy()
    kept = (ours != 0).numpy() & (theirs != 0) & (x != 0).numpy()
    assert kept.sum() > 1000
    np.testing.assert_allclose(ours.numpy()[kept], theirs[kept], rtol=1e-6)
    np.testing.assert_allclose(ours.numpy()[kept], x.numpy()[kept] / (1 - rate), rtol=1e-6)
    assert set(np.unique(ours.numpy()[(ours == 0).numpy()])) <= {0.0}


def test_the_expected_output_is_the_input() -> None:
    """Inverted dropout keeps each unit's expectation: the mean over many draws is x."""
    torch.manual_seed(1)
    layer = Dropout(0.4).train()
    x = torch.full((200_000,), 2.0)
    assert layer(x).mean().item() == pytest.approx(2.0, rel=0.01)


def test_inference_rate_zero_and_the_inplace_form() -> None:
    x = torch.randn(8, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    torch.manual_seed(4)
    expected = Dropout(0.5).train()(x)
    torch.manual_seed(4)
    inplace = x.clone()
    assert torch.equal(Dropout(0.5, inplace=True).train()(inplace), expected)
    assert torch.equal(inplace, expected)


def test_masks_come_from_the_global_generator_so_a_seed_fixes_them() -> None:
    """A lone trial's masks follow `seed_everything`; the draw equals `dropout_noise` from a
    generator in the same state (what a pack member draws from)."""
    x = torch.ones(31, 17)  # 527 elements: the last word's last quarter is unused
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = Dropout(0.25).train()(x)
    torch.manual_seed(11)
    assert torch.equal(Dropout(0.25).train()(x), first)
    generator = torch.Generator()
    generator.set_state(state)
    assert torch.equal(dropout_noise(x.shape, 0.25, generator=generator), first)
    # and the generator moved on by exactly one word per four elements
    words = torch.empty(dropout_words(x.numel()), dtype=torch.int64)
    replay = torch.Generator()
    replay.set_state(state)
    dropout_bits(words, replay)
    assert torch.equal(replay.get_state(), generator.get_state())


def test_thresholds_and_refused_rates() -> None:
    """Each element's 16-bit number is kept at or above the threshold: P(keep) is `1 - rate`
    rounded to a multiple of 2⁻¹⁶."""
    assert dropout_threshold(0.0) == -(2**15)  # every int16 is kept
    assert dropout_threshold(0.5) == 0
    assert dropout_threshold(1 - 1e-12) == 2**15 - 1  # clamped inside int16
    for rate in (0.1, 0.3, 0.77):
        kept = 2**15 - dropout_threshold(rate)  # how many of the 2**16 numbers are kept
        assert abs(kept / 2**16 - (1 - rate)) <= 2**-17
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout rate"):
            dropout_threshold(rate)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_noise_keeps_exactly_the_elements_at_or_above_the_threshold(
    dtype: torch.dtype,
) -> None:
    """`dropout_scaled` (arithmetic, not a comparison) against `elements >= threshold` on
    every int16, for extreme and ordinary thresholds, given as numbers (a lone trial) and as
    a tensor over members (a pack)."""
    elements = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    rates = [0.0, 1e-9, 0.3, 0.5, 0.77, 1 - 1e-12]
    thresholds = [dropout_threshold(rate) for rate in rates]
    scales = [1.0 / (1.0 - rate) for rate in rates]
    for threshold, scale in zip(thresholds, scales, strict=True):
        expected = (elements >= threshold).to(dtype) * torch.tensor(scale, dtype=dtype)
        noise = dropout_scaled(elements, threshold - 1.0, scale, dtype)
        assert noise.dtype == dtype
        assert torch.equal(noise, expected)
    members = len(rates)
    stacked = elements.expand(members, 1, -1)
    below = torch.tensor([t - 1.0 for t in thresholds]).view(members, 1, 1)
    factors = torch.tensor(scales, dtype=torch.float64).to(dtype).view(members, 1, 1)
    expected = (stacked >= torch.tensor(thresholds).view(members, 1, 1)).to(dtype) * factors
    assert torch.equal(dropout_scaled(stacked, below, factors, dtype), expected)


def test_the_builtin_networks_use_it() -> None:
    network = MLP(64, 10, NetworkConfig(hidden_units=(16, 8), dropout=0.2))
    dropouts = [module for module in network.modules() if isinstance(module, torch.nn.Dropout)]
    assert len(dropouts) == 2
    assert all(type(module) is Dropout and module.p == 0.2 for module in dropouts)

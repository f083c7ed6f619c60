"""Data augmentation of training batches: Keras's layers, their ranges, seeding and resuming."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from trainer import TrialConfig, TrialResult, run_trial
from trainer.augmentation import Augmenter, affine, random_flip
from trainer.config import AugmentationConfig, CheckpointConfig, DatasetConfig, ModelConfig
from trainer.spec_error import SpecError
from trainer.template import TrialTemplate

CPU = torch.device("cpu")


def image(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.arange(n * size * size, dtype=torch.float32).reshape(n, 1, size, size)


def transform(x: torch.Tensor, shift: tuple[float, float] = (0.0, 0.0), angle: float = 0.0,
              zoom: float = 1.0) -> torch.Tensor:  # fmt: skip
    n = len(x)
    return affine(x, torch.tensor([shift] * n), torch.full((n,), angle), torch.full((n,), zoom))


def test_the_identity_map_keeps_the_image() -> None:
    torch.testing.assert_close(transform(image()), image())


def test_a_quarter_turn_is_counter_clockwise() -> None:
    x = image()
    torch.testing.assert_close(transform(x, angle=math.pi / 2), torch.rot90(x, 1, dims=(-2, -1)))


def test_a_positive_translation_moves_the_content_down_and_right_and_reflects_the_edge() -> None:
    x = image()
    down = transform(x, shift=(1 / 8, 0.0))  # one pixel of eight
    torch.testing.assert_close(down[..., 1:, :], x[..., :-1, :])
    torch.testing.assert_close(down[..., 0, :], x[..., 0, :])  # reflect: d c b a | a b c d
    right = transform(x, shift=(0.0, 2 / 8))
    torch.testing.assert_close(right[..., :, 2:], x[..., :, :-2])
    torch.testing.assert_close(right[..., :, :2], x[..., :, :2].flip(-1))


def test_zoom_scales_about_the_centre_in_for_below_one_and_out_above() -> None:
    ramp = torch.arange(8, dtype=torch.float32).repeat(8, 1).reshape(1, 1, 8, 8)
    zoomed_in = transform(ramp, zoom=0.5)
    # bilinear sampling of a linear ramp is exact: the slope halves about the centre 3.5
    expected = 3.5 + 0.5 * (torch.arange(8, dtype=torch.float32) - 3.5)
    torch.testing.assert_close(zoomed_in[0, 0, 4], expected)
    zoomed_out = transform(ramp, zoom=2.0)
    assert zoomed_out[0, 0, 4, 0] != ramp[0, 0, 4, 0]  # the edge now shows reflected content


def test_a_horizontal_flip_mirrors_about_half_of_the_images() -> None:
    x = torch.randn(400, 1, 4, 4)
    flipped = random_flip(x, "horizontal", torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(x, flipped, strict=True)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(x, flipped, strict=True)])
    assert bool((mirrored | kept).all())
    assert 150 < int(mirrored.sum()) < 250
    both = random_flip(x, "horizontal_and_vertical", torch.Generator().manual_seed(0))
    assert any(torch.equal(b, a.flip(-1).flip(-2)) for a, b in zip(x, both, strict=True))


def test_gaussian_noise_has_the_stddev_asked_and_leaves_the_mean() -> None:
    augmenter = Augmenter(AugmentationConfig(gaussian_noise=0.3), seed=1, device=CPU)
    x = torch.zeros(2000, 16)
    noise = augmenter(x) - x
    assert float(noise.std()) == pytest.approx(0.3, rel=0.03)
    assert abs(float(noise.mean())) < 0.01


def test_draws_stay_within_keras_ranges() -> None:
    config = AugmentationConfig(random_translation=0.1, random_rotation=0.05, random_zoom=0.2)
    shifts, angles, zooms = Augmenter(config, seed=3, device=CPU)._draw_affine(5000, CPU)
    assert float(shifts.abs().max()) <= 0.1
    assert float(shifts.abs().max()) > 0.09
    assert float(angles.abs().max()) <= 0.05 * 2 * math.pi
    assert 0.8 <= float(zooms.min()) < 0.81
    assert 1.19 < float(zooms.max()) <= 1.2


def test_image_augmentation_refuses_flat_inputs() -> None:
    augmenter = Augmenter(AugmentationConfig(random_flip="vertical"), seed=0, device=CPU)
    with pytest.raises(ValueError, match=r"needs \(batch, channels, height, width\)"):
        augmenter(torch.zeros(4, 64))


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        AugmentationConfig(random_zoom=1.0)
    with pytest.raises(ValidationError):
        AugmentationConfig(random_flip="diagonal")  # type: ignore[arg-type]


# --- in a trial -------------------------------------------------------------------------------


def cnn_trial(max_epochs: int = 4, **augmentation: Any) -> TrialConfig:
    return TrialConfig(
        dataset=DatasetConfig(name="digits"),
        model=ModelConfig(type="cnn", config={"channels": (4,), "hidden_units": (16,)}),
        batch_size=64,
        max_epochs=max_epochs,
        checkpoint=CheckpointConfig(resume_every_s=0.0),
        augmentation=AugmentationConfig(**augmentation),
    )


def curve(result: TrialResult) -> list[float | None]:
    return [v for r in result.history for v in (r.loss, r.val_loss, r.val_accuracy)]


AUGMENTED: dict[str, Any] = {
    "random_translation": 0.1,
    "random_rotation": 0.03,
    "gaussian_noise": 0.1,
}


def test_an_augmented_trial_is_reproducible_and_differs_from_a_plain_one() -> None:
    first, again = run_trial(cnn_trial(**AUGMENTED)), run_trial(cnn_trial(**AUGMENTED))
    plain = run_trial(cnn_trial())
    assert curve(first) == curve(again)
    assert curve(first) != curve(plain)
    assert first.status == "completed"


def test_a_resumed_augmented_trial_continues_the_same_sequence(tmp_path: Path) -> None:
    straight = run_trial(cnn_trial(**AUGMENTED))
    half = run_trial(cnn_trial(max_epochs=2, **AUGMENTED), checkpoint_dir=tmp_path / "a")
    assert half.last_checkpoint is not None
    resumed = run_trial(
        cnn_trial(**AUGMENTED), checkpoint_dir=tmp_path / "b", resume_from=half.last_checkpoint
    )
    assert resumed.resumed_from_epoch == 2
    assert curve(resumed) == pytest.approx(curve(straight), rel=1e-6)


def test_validation_and_test_data_are_never_augmented() -> None:
    # the final metrics are evaluated on unaugmented data: evaluating twice gives one answer,
    # and heavy noise on the training batches does not reach the validation loss's inputs
    noisy = run_trial(cnn_trial(max_epochs=1, gaussian_noise=50.0))
    assert noisy.val is not None
    assert noisy.history[-1].val_loss == pytest.approx(noisy.val.loss, rel=1e-6)


# --- in a spec --------------------------------------------------------------------------------


def test_the_augmentation_parameters_reach_the_trial() -> None:
    template = TrialTemplate.model_validate(
        {
            "model": {"type": "cnn"},
            "search_space": {
                "random_flip": {"type": "categorical", "choices": ["none", "horizontal"]},
                "random_zoom": {"type": "float", "low": 0.0, "high": 0.2},
                "gaussian_noise": {"type": "float", "low": 0.0, "high": 0.5},
            },
        }
    )
    config = template.config_for(
        {"random_flip": "horizontal", "random_zoom": 0.1, "gaussian_noise": 0.2}
    )
    assert config.augmentation == AugmentationConfig(
        random_flip="horizontal", random_zoom=0.1, gaussian_noise=0.2
    )
    assert (
        TrialTemplate.model_validate({"model": {"type": "cnn"}}).config_for({}).augmentation
        == AugmentationConfig()
    )


@pytest.mark.parametrize("block", ["search_space", "fixed"])
def test_an_image_augmentation_for_a_flat_model_is_refused_at_its_path(block: str) -> None:
    value: Any = {"type": "categorical", "choices": ["none", "horizontal"]}
    spec = {
        "model": {"type": "mlp"},
        block: {"random_flip": value if block == "search_space" else "horizontal"},
    }
    with pytest.raises(ValidationError) as caught:
        TrialTemplate.model_validate(spec)
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, SpecError)
    assert error.path == (block, "random_flip")
    assert "model 'mlp' takes flat inputs" in error.reason


def test_gaussian_noise_suits_any_data() -> None:
    template = TrialTemplate.model_validate(
        {
            "model": {"type": "mlp"},
            "search_space": {"gaussian_noise": {"type": "float", "low": 0.0, "high": 0.3}},
        }
    )
    assert template.config_for({"gaussian_noise": 0.1}).augmentation.gaussian_noise == 0.1

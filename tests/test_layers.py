"""BatchNormalization against keras.layers.BatchNormalization itself (Keras 3, torch backend)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
import torch

from trainer.layers import BatchNormalization

RNG = np.random.default_rng(7)


def numpy(value: object) -> np.ndarray:
    """A Keras tensor or variable (torch backend) as numpy."""
    tensor = getattr(value, "value", value)
    assert isinstance(tensor, torch.Tensor)
    return tensor.detach().cpu().numpy()


def batches(shape: tuple[int, ...], steps: int) -> list[np.ndarray]:
    """Batches whose statistics drift, so the moving averages have something to follow."""
    return [
        (RNG.normal(size=shape) * (1.0 + step) + 0.5 * step).astype(np.float32)
        for step in range(steps)
    ]


@pytest.mark.parametrize(
    ("shape", "momentum", "epsilon"),
    [((16, 5), 0.99, 1e-3), ((16, 5), 0.9, 1e-2), ((6, 3, 4, 4), 0.99, 1e-3)],
    ids=["dense-keras-defaults", "dense-momentum-0.9", "conv-channels"],
)
def test_training_outputs_and_moving_statistics_match_keras(
    shape: tuple[int, ...], momentum: float, epsilon: float
) -> None:
    features = shape[1]
    theirs = keras.layers.BatchNormalization(axis=1, momentum=momentum, epsilon=epsilon)
    theirs.build(shape)
    gamma = RNG.uniform(0.5, 2.0, size=features).astype(np.float32)
    beta = RNG.normal(size=features).astype(np.float32)
    theirs.gamma.assign(gamma)
    theirs.beta.assign(beta)
    ours = BatchNormalization(features, momentum=momentum, epsilon=epsilon)
    with torch.no_grad():
        ours.weight.copy_(torch.from_numpy(gamma))
        ours.bias.copy_(torch.from_numpy(beta))
    ours.train()
    for x in batches(shape, 4):
        expected = numpy(theirs(x, training=True))
        got = ours(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.running_mean.numpy(), numpy(theirs.moving_mean), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.numpy(), numpy(theirs.moving_variance), rtol=1e-5)
    ours.eval()
    probe = batches(shape, 1)[0]
    np.testing.assert_allclose(
        ours(torch.from_numpy(probe)).detach().numpy(),
        numpy(theirs(probe, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_moving_variance_follows_the_biased_batch_variance() -> None:
    # Keras: moving = momentum * moving + (1 - momentum) * var(x, ddof=0); torch's own
    # BatchNorm1d would use ddof=1 (and momentum 1 - 0.99).
    x = torch.tensor([[1.0], [2.0], [4.0], [9.0]])
    layer = BatchNormalization(1)
    layer(x)
    biased = float(x.var(correction=0))
    assert float(layer.running_var) == pytest.approx(0.99 * 1.0 + 0.01 * biased)
    assert float(layer.running_mean) == pytest.approx(0.01 * 4.0)


def test_gradients_are_those_of_batch_normalization() -> None:
    # torch's BatchNorm normalizes training batches as Keras does (biased variance): the same
    # outputs and gradients, whatever their running statistics do.
    x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    reference = torch.nn.BatchNorm1d(4, eps=1e-3).double()
    ours = BatchNormalization(4).double()
    weights = torch.randn(12, 4, dtype=torch.float64)
    (reference(x) * weights).sum().backward()
    expected = (x.grad.clone(), reference.weight.grad, reference.bias.grad)  # type: ignore[union-attr]
    x.grad = None
    (ours(x) * weights).sum().backward()
    for got, want in zip((x.grad, ours.weight.grad, ours.bias.grad), expected, strict=True):
        assert got is not None
        assert want is not None
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_a_batch_of_one_value_per_feature_normalizes_to_beta_instead_of_raising(
    shape: tuple[int, ...],
) -> None:
    # (torch's BatchNorm refuses it; a last mini-batch of one row is common)
    layer = BatchNormalization(3)
    beta = torch.tensor([0.1, 0.2, 0.3])
    with torch.no_grad():
        layer.bias.copy_(beta)
    x = torch.tensor([5.0, -2.0, 7.0]).view(shape)
    torch.testing.assert_close(layer(x), beta.view(shape))
    torch.testing.assert_close(layer.running_mean, 0.01 * torch.tensor([5.0, -2.0, 7.0]))
    torch.testing.assert_close(layer.running_var, torch.full((3,), 0.99))


@pytest.mark.parametrize(("momentum", "epsilon"), [(1.0, 1e-3), (-0.1, 1e-3), (0.99, 0.0)])
def test_out_of_range_arguments_are_refused(momentum: float, epsilon: float) -> None:
    with pytest.raises(ValueError, match=r"momentum|epsilon"):
        BatchNormalization(2, momentum=momentum, epsilon=epsilon)

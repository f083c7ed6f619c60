"""Data loading: digits, synthetic, CSV and NPZ files; stratified splits; train-only scaling."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits

from trainer import data
from trainer.config import DatasetConfig
from trainer.data import DatasetError, DataSplits, Split, load_folds, load_splits

N_DIGITS = 1797


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Splits are cached per process; clear it so determinism tests really load twice."""
    data._cached_splits.cache_clear()
    yield
    data._cached_splits.cache_clear()


def rows(*splits: Split | None) -> Counter[bytes]:
    """The multiset of sample rows (features and label) in the given splits."""
    counter: Counter[bytes] = Counter()
    for split in splits:
        if split is None:
            continue
        X = split.X.reshape(len(split), -1).numpy()
        for features, label in zip(X, split.y.numpy(), strict=True):
            counter[features.tobytes() + label.tobytes()] += 1
    return counter


def raw_digit_rows() -> Counter[bytes]:
    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    return Counter(
        features.tobytes() + label.tobytes() for features, label in zip(X, y, strict=True)
    )


def proportions(y: torch.Tensor, n_classes: int) -> NDArray[np.float64]:
    counts = np.bincount(y.numpy(), minlength=n_classes)
    shares: NDArray[np.float64] = counts / counts.sum()
    return shares


def same_split(a: Split, b: Split) -> bool:
    return torch.equal(a.X, b.X) and torch.equal(a.y, b.y)


def write_npz(path: Path, **arrays: NDArray[np.generic]) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def npz_config(path: str, **changes: object) -> DatasetConfig:
    return DatasetConfig(name="npz", path=path, **changes)


def csv_config(path: Path, target: str = "label", **changes: object) -> DatasetConfig:
    return DatasetConfig(name="csv", path=str(path), target=target, **changes)


# --- digits ---------------------------------------------------------------------------------


def test_digits_flat_shapes_and_types() -> None:
    splits = load_splits(DatasetConfig())
    assert splits.input_shape == (64,)
    assert splits.n_classes == 10
    assert splits.test is not None
    for split in (splits.train, splits.val, splits.test):
        assert split.X.shape == (len(split), 64)
        assert split.X.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.y.shape == (len(split),)
    assert set(splits.train.y.tolist()) == set(range(10))


def test_digits_as_images() -> None:
    splits = load_splits(DatasetConfig(), image=True)
    assert splits.input_shape == (1, 8, 8)
    assert splits.train.X.shape == (len(splits.train), 1, 8, 8)
    flat = load_splits(DatasetConfig())
    torch.testing.assert_close(splits.train.X.reshape(len(splits.train), -1), flat.train.X)


@pytest.mark.parametrize(
    ("validation_split", "test_split"),
    [(0.2, 0.2), (0.1, 0.3), (0.3, 0.1), (0.25, 0.25), (0.15, 0.05), (0.2, 0.0)],
)
def test_split_sizes_follow_the_fractions_of_all_samples(
    validation_split: float, test_split: float
) -> None:
    splits = load_splits(DatasetConfig(validation_split=validation_split, test_split=test_split))
    n_test = math.ceil(test_split * N_DIGITS)
    n_val = math.ceil(validation_split * N_DIGITS)
    assert len(splits.val) == n_val
    if n_test == 0:
        assert splits.test is None
    else:
        assert splits.test is not None
        assert len(splits.test) == n_test
    assert len(splits.train) == N_DIGITS - n_val - n_test


@pytest.mark.parametrize("seed", [0, 3])
def test_splits_partition_the_data(seed: int) -> None:
    splits = load_splits(DatasetConfig(seed=seed, standardize=False))
    assert rows(splits.train, splits.val, splits.test) == raw_digit_rows()


def test_splits_are_stratified() -> None:
    splits = load_splits(DatasetConfig(validation_split=0.2, test_split=0.2))
    assert splits.test is not None
    y_all = torch.cat([splits.train.y, splits.val.y, splits.test.y])
    overall = proportions(y_all, 10)
    for split in (splits.train, splits.val, splits.test):
        np.testing.assert_allclose(proportions(split.y, 10), overall, atol=0.01)


def test_same_seed_gives_identical_splits_and_fingerprint() -> None:
    first = load_splits(DatasetConfig(seed=5))
    data._cached_splits.cache_clear()
    second = load_splits(DatasetConfig(seed=5))
    assert first is not second
    assert first.fingerprint == second.fingerprint
    assert first.test is not None
    assert second.test is not None
    assert same_split(first.train, second.train)
    assert same_split(first.val, second.val)
    assert same_split(first.test, second.test)


def test_other_seed_gives_other_splits_and_fingerprint() -> None:
    first = load_splits(DatasetConfig(seed=0, standardize=False))
    other = load_splits(DatasetConfig(seed=1, standardize=False))
    assert first.fingerprint != other.fingerprint
    assert rows(first.val) != rows(other.val)
    assert rows(first.train) != rows(other.train)


def test_fingerprint_depends_on_standardization() -> None:
    assert (
        load_splits(DatasetConfig(standardize=True)).fingerprint
        != load_splits(DatasetConfig(standardize=False)).fingerprint
    )


def test_standardization_is_fitted_on_train_only() -> None:
    scaled = load_splits(DatasetConfig(seed=2))
    raw = load_splits(DatasetConfig(seed=2, standardize=False))
    raw_train = raw.train.X.double()
    mean = raw_train.mean(dim=0)
    std = raw_train.std(dim=0, unbiased=False)
    varying = std > 0
    assert 0 < int(varying.sum()) < 64  # digits has constant (always blank) pixels

    train = scaled.train.X.double()
    torch.testing.assert_close(
        train[:, varying].mean(dim=0),
        torch.zeros(int(varying.sum()), dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(
        train[:, varying].std(dim=0, unbiased=False),
        torch.ones(int(varying.sum()), dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    # Validation and test data are transformed with the train statistics, not their own.
    expected_val = (raw.val.X.double()[:, varying] - mean[varying]) / std[varying]
    torch.testing.assert_close(scaled.val.X.double()[:, varying], expected_val, atol=1e-4, rtol=0)
    val_mean = scaled.val.X.double()[:, varying].mean(dim=0)
    assert float(val_mean.abs().max()) > 1e-3


def test_without_standardization_values_stay_raw() -> None:
    splits = load_splits(DatasetConfig(standardize=False))
    assert float(splits.train.X.min()) == 0.0
    assert float(splits.train.X.max()) == 16.0
    assert torch.equal(splits.train.X, splits.train.X.round())


def test_load_splits_is_cached_per_config() -> None:
    config = DatasetConfig(seed=7)
    assert load_splits(config) is load_splits(DatasetConfig(seed=7))
    assert load_splits(config, image=True) is not load_splits(config)


# --- synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_samples", "n_features", "n_classes"), [(200, 5, 3), (150, 12, 2), (300, 3, 7)]
)
def test_synthetic_honours_its_sizes(n_samples: int, n_features: int, n_classes: int) -> None:
    config = DatasetConfig(
        name="synthetic", n_samples=n_samples, n_features=n_features, n_classes=n_classes
    )
    splits = load_splits(config)
    assert splits.input_shape == (n_features,)
    assert splits.n_classes == n_classes
    total = len(splits.train) + len(splits.val) + (0 if splits.test is None else len(splits.test))
    assert total == n_samples
    assert splits.train.X.shape[1] == n_features
    assert set(splits.train.y.tolist()) == set(range(n_classes))


def test_synthetic_is_seeded() -> None:
    config = DatasetConfig(name="synthetic", n_samples=100, seed=3, standardize=False)
    first = load_splits(config)
    data._cached_splits.cache_clear()
    again = load_splits(config)
    assert same_split(first.train, again.train)
    assert first.fingerprint == again.fingerprint
    other = load_splits(DatasetConfig(name="synthetic", n_samples=100, seed=4, standardize=False))
    assert rows(first.train, first.val, first.test) != rows(other.train, other.val, other.test)


def test_synthetic_with_too_few_features_for_its_classes() -> None:
    with pytest.raises(DatasetError, match="needs at least 3 features"):
        load_splits(DatasetConfig(name="synthetic", n_features=2, n_classes=5))


# --- CSV ------------------------------------------------------------------------------------


def test_csv_numeric_features_and_string_labels(tmp_path: Path) -> None:
    # Feature "code" equals the index the label gets (classes are sorted), so the encoding of
    # every row can be checked after the shuffle; the target column sits between features.
    names = ["cat", "dog", "eel"]
    lines = ["code, label ,size"]
    for i in range(60):
        lines.append(f"{i % 3},{names[i % 3]},{i * 0.5}")
    path = tmp_path / "animals.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    splits = load_splits(csv_config(path, standardize=False))
    assert splits.n_classes == 3
    assert splits.input_shape == (2,)
    assert splits.test is not None
    for split in (splits.train, splits.val, splits.test):
        assert torch.equal(split.X[:, 0].long(), split.y)
    all_sizes = torch.cat([splits.train.X[:, 1], splits.val.X[:, 1], splits.test.X[:, 1]])
    assert sorted(all_sizes.tolist()) == [i * 0.5 for i in range(60)]


def test_csv_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    body = "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20))
    path.write_text("x,label\n\n" + body + "\n", encoding="utf-8")
    splits = load_splits(csv_config(path))
    assert len(splits.train) + len(splits.val) + (len(splits.test) if splits.test else 0) == 20


def test_csv_is_read_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "grow.csv"
    path.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)), encoding="utf-8")
    config = csv_config(path)
    first = load_splits(config)
    path.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40)), encoding="utf-8")
    second = load_splits(config)
    assert len(first.train) + len(first.val) < len(second.train) + len(second.val)
    assert first.fingerprint != second.fingerprint


BAD_CSV = [
    pytest.param("a,b\n1,x\n2,y\n", "label", "has no target column 'label'", id="no-target"),
    pytest.param(
        "a,b,label\n1,2,x\n3,4,y\n5,oops,x\n",
        "label",
        "CSV line 4, column 'b': 'oops' is not a number",
        id="non-numeric",
    ),
    pytest.param(
        "a,b,label\n1,2,x\n3,y\n", "label", "CSV line 3: 2 fields, the header has 3", id="ragged"
    ),
    pytest.param(
        "a,label\n1,x\n2,x\n3,x\n", "label", "the target has 1 class; at least 2", id="one-class"
    ),
    pytest.param("", "label", "is empty", id="empty-file"),
    pytest.param("a,label\n", "label", "has no rows", id="header-only"),
    pytest.param(
        "label\nx\ny\n", "label", "has no feature column besides 'label'", id="no-features"
    ),
    pytest.param(
        "a,label\n1,x\nnan,y\n", "label", "row 1 has a missing or non-finite value", id="nan"
    ),
]


@pytest.mark.parametrize(("content", "target", "message"), BAD_CSV)
def test_bad_csv_raises_dataset_error(
    tmp_path: Path, content: str, target: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_splits(csv_config(path, target))
    assert message in str(error.value)


def test_missing_csv_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cannot read CSV file nowhere\.csv"):
        load_splits(csv_config(tmp_path / "nowhere.csv"))


def test_cnn_on_flat_csv_data(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(20)), "utf-8")
    with pytest.raises(DatasetError, match="needs image inputs"):
        load_splits(csv_config(path), image=True)


# --- NPZ ------------------------------------------------------------------------------------


def labels(n: int, n_classes: int = 2) -> NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) % n_classes


@pytest.mark.parametrize(
    ("shape", "image", "input_shape"),
    [
        ((40, 6), False, (6,)),
        ((40, 5, 4), True, (1, 5, 4)),
        ((40, 5, 4), False, (20,)),
        ((40, 3, 4, 4), True, (3, 4, 4)),
        ((40, 3, 4, 4), False, (48,)),
    ],
)
def test_npz_shapes(
    tmp_path: Path, shape: tuple[int, ...], image: bool, input_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "d.npz", X=rng.normal(size=shape), y=labels(shape[0]))
    splits = load_splits(npz_config(path), image=image)
    assert splits.input_shape == input_shape
    assert splits.train.X.shape[1:] == input_shape
    assert splits.train.X.dtype == torch.float32
    assert splits.n_classes == 2


def test_npz_string_labels_are_encoded(tmp_path: Path) -> None:
    y = np.array(["b", "a", "c"] * 10)
    X = np.stack([np.array({"a": 0, "b": 1, "c": 2}[v], dtype=np.float64) for v in y])[:, None]
    path = write_npz(tmp_path / "s.npz", X=X, y=y)
    splits = load_splits(npz_config(path, standardize=False))
    assert splits.n_classes == 3
    assert torch.equal(splits.train.X[:, 0].long(), splits.train.y)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        pytest.param({"X": np.zeros((20, 3))}, "lacks arrays ['y']", id="missing-y"),
        pytest.param({"features": np.zeros((20, 3)), "y": labels(20)}, "['X']", id="missing-X"),
        pytest.param(
            {"X": np.zeros((20, 3)), "y": labels(19)},
            "y must be (n,) or (n, k) with one row per row of X",
            id="length-mismatch",
        ),
        pytest.param(
            {"X": np.zeros((20, 3)), "y": labels(20).reshape(20, 1)},
            "class labels must be 1-D",
            id="y-2d",
        ),
        pytest.param(
            {"X": np.where(np.eye(20, 3) > 0, np.nan, 1.0), "y": labels(20)},
            "row 0 has a missing or non-finite value",
            id="nan",
        ),
        pytest.param(
            {"X": np.full((20, 3), np.inf), "y": labels(20)}, "non-finite value", id="inf"
        ),
        pytest.param(
            {"X": np.array([["a", "b"]] * 20), "y": labels(20)},
            "X must be numeric",
            id="string-X",
        ),
        pytest.param(
            {"X": np.ones((20, 3), dtype=np.complex128) * 1j, "y": labels(20)},
            "X must be numeric",
            id="complex-X",
        ),
        pytest.param({"X": np.zeros((20,)), "y": labels(20)}, "X must be (n, features)", id="X-1d"),
        pytest.param({"X": np.zeros((20, 3)), "y": np.zeros(20)}, "1 class", id="one-class"),
        pytest.param(
            {"X": np.zeros((0, 3)), "y": np.zeros(0, dtype=np.int64)}, "has no rows", id="empty"
        ),
    ],
)
def test_bad_npz_raises_dataset_error(
    tmp_path: Path, arrays: dict[str, NDArray[np.generic]], message: str
) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError) as error:
        load_splits(npz_config(path))
    assert message in str(error.value)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("not numpy", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"NPZ file text\.npz is not a zip archive"):
        load_splits(npz_config(str(path)))


def test_flat_npz_for_a_cnn(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "flat.npz", X=np.zeros((20, 3)), y=labels(20))
    with pytest.raises(DatasetError, match="needs image inputs"):
        load_splits(npz_config(path), image=True)


def test_small_data_set_falls_back_to_an_unstratified_split(tmp_path: Path) -> None:
    # 4 classes, 10 samples: after 7 go to the test split, the 3 kept cannot hold every class.
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    X = np.arange(10, dtype=np.float64)[:, None]
    path = write_npz(tmp_path / "tiny.npz", X=X, y=y)
    splits = load_splits(npz_config(path, validation_split=0.1, test_split=0.7))
    assert splits.test is not None
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2, 1, 7)


def test_too_few_samples_to_split(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "two.npz", X=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="too few"):
        load_splits(npz_config(path, validation_split=0.4, test_split=0.4))


# --- k-fold cross-validation ----------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
def test_folds_rotate_validation_over_train_and_validation(k: int) -> None:
    config = DatasetConfig(folds=k, standardize=False, seed=1)
    folds: list[DataSplits[Split]] = list(load_folds(config))
    assert len(folds) == k

    holdout = load_splits(config)
    rest = rows(holdout.train, holdout.val)
    assert holdout.test is not None
    for fold in folds:
        assert fold.test is not None
        assert same_split(fold.test, holdout.test)
        assert rows(fold.train, fold.val) == rest
    # Validation sets are disjoint and together cover train+validation exactly once.
    assert rows(*(fold.val for fold in folds)) == rest
    assert len({fold.fingerprint for fold in folds}) == k


def test_folds_standardize_on_each_fold_train() -> None:
    for fold in load_folds(DatasetConfig(folds=3)):
        std = fold.train.X.std(dim=0, unbiased=False)
        varying = std > 0
        assert float(fold.train.X[:, varying].mean(dim=0).abs().max()) < 1e-4


def test_folds_are_stratified() -> None:
    folds = list(load_folds(DatasetConfig(folds=4)))
    overall = proportions(torch.cat([folds[0].train.y, folds[0].val.y]), 10)
    for fold in folds:
        np.testing.assert_allclose(proportions(fold.val.y, 10), overall, atol=0.02)


def test_folds_need_enough_samples_of_every_class(tmp_path: Path) -> None:
    y = np.array([0] * 10 + [1] * 10 + [2] * 3)
    path = write_npz(tmp_path / "rare.npz", X=np.arange(23.0)[:, None], y=y)
    with pytest.raises(DatasetError) as error:
        list(load_folds(npz_config(path, folds=5, test_split=0.0)))
    assert "5-fold cross-validation needs at least 5 samples of every class" in str(error.value)
    assert "the rarest class has 3" in str(error.value)


def test_load_folds_needs_folds() -> None:
    with pytest.raises(ValueError, match="'folds' set"):
        list(load_folds(DatasetConfig()))


def test_splits_move_to_a_device_unchanged() -> None:
    splits = load_splits(DatasetConfig())
    moved = splits.to(torch.device("cpu"))
    assert moved.test is not None
    assert splits.test is not None
    assert same_split(moved.train, splits.train)
    assert same_split(moved.test, splits.test)
    assert (moved.input_shape, moved.n_classes, moved.fingerprint) == (
        splits.input_shape,
        splits.n_classes,
        splits.fingerprint,
    )

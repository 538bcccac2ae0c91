"""Feature-space augmentations: parsing and its one-line errors, and what each step does to a batch
(shapes, label semantics, the statistics it scales by, determinism under a seeded generator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads.augment import AugmentationPipeline, Mixup, Smote, column_stats, parse_augmentations
from heads.errors import HeadsError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/heads/conftest.py


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot(codes: np.ndarray, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(codes), classes).to(torch.float32)


def labelled(counts: list[int], dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training vectors: one Gaussian cloud per class, `counts[c]` vectors of class c."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.normal(size=(len(y), dim)) + 3 * rng.normal(size=(len(counts), dim))[y]
    return x.astype(np.float32), y


# -- parsing ------------------------------------------------------------------------------------------


def test_spec_is_parsed_in_order_into_a_canonical_string():
    pipeline = parse_augmentations(" noise:0.1, mixup:0.4 ,smote:5,views")
    assert [s.name for s in pipeline.steps] == ["smote", "noise", "mixup", "views"]  # SMOTE runs first
    assert pipeline.spec == "smote:5,noise:0.1,mixup:0.4:across,views"
    assert pipeline.uses_views
    assert parse_augmentations(pipeline.spec).spec == pipeline.spec
    assert parse_augmentations("mixup:1:within,dropout:0.25").spec == "mixup:1.0:within,dropout:0.25"
    empty = parse_augmentations("")
    assert empty.steps == [] and empty.spec == "" and not empty.uses_views


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(HeadsError) as caught:
        parse_augmentations("noise:0.1,nois:0.2")
    message = str(caught.value)
    assert message.startswith("unknown augmentation 'nois'; valid: noise:SCALE, dropout:P,")
    assert "mixup:ALPHA[:within|across] (default: across classes), smote:K, views" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("noise", "noise:SCALE"),
        ("noise:-0.1", "SCALE must be > 0"),
        ("noise:abc", "SCALE must be a number"),
        ("noise:nan", "SCALE must be finite"),
        ("dropout:1", "P must be in (0, 1)"),
        ("dropout:0", "P must be in (0, 1)"),
        ("mixup:0", "ALPHA must be > 0"),
        ("mixup:0.4:sideways", "mode must be within or across"),
        ("mixup:0.4:within:x", "mixup:ALPHA[:within|across]"),
        ("smote:2.5", "K must be an integer >= 1"),
        ("smote:0", "K must be an integer >= 1"),
        ("views:1", "takes the form views"),
        ("noise:0.1,noise:0.2", "given twice"),
    ],
)
def test_bad_parameters_are_one_line_errors_with_the_ranges(spec, names):
    with pytest.raises(HeadsError) as caught:
        parse_augmentations(spec)
    message = str(caught.value)
    assert names in message and "valid: noise:SCALE" in message and "K an integer >= 1" in message
    assert "\n" not in message


def test_steps_needing_statistics_refuse_an_unfitted_batch():
    x, y = torch.zeros(4, 3), one_hot(np.array([0, 1, 0, 1]), 2)
    for spec in ("noise:0.1", "smote:3"):
        with pytest.raises(HeadsError, match="call AugmentationPipeline.fit first"):
            parse_augmentations(spec)(x, y, generator())


# -- steps --------------------------------------------------------------------------------------------


def test_noise_is_scaled_by_each_dimensions_training_std():
    rng = np.random.default_rng(0)
    std = np.array([0.1, 1.0, 10.0], dtype=np.float32)
    train = (rng.normal(size=(5000, 3)) * std).astype(np.float32)
    pipeline = parse_augmentations("noise:0.5").fit(train, np.zeros(len(train), dtype=np.int64), 1)
    x, y = torch.zeros(20000, 3), one_hot(np.zeros(20000, dtype=np.int64), 1)
    out, out_y = pipeline(x, y, generator())
    assert out.shape == x.shape and torch.equal(out_y, y)
    np.testing.assert_allclose(out.std(dim=0).numpy(), 0.5 * train.std(axis=0), rtol=0.03)
    assert abs(out.mean(dim=0).numpy()).max() < 0.1


def test_dropout_zeroes_about_p_and_scales_the_rest():
    x = torch.ones(2000, 50)
    y = one_hot(np.zeros(2000, dtype=np.int64), 2)
    out, out_y = parse_augmentations("dropout:0.3")(x, y, generator())
    assert out.shape == x.shape and torch.equal(out_y, y)
    zero = out == 0
    assert abs(zero.float().mean().item() - 0.3) < 0.01
    np.testing.assert_allclose(out[~zero].numpy(), 1 / 0.7, rtol=1e-6)


def _mixing_partners(out_x, out_y, x, y) -> list[tuple[int, float]]:
    """For each output row, a (partner, lambda) with out = lambda * row + (1 - lambda) * partner for x and
    y together (lambda in [0, 1]; the row itself where it is unchanged); fails when no batch row fits."""
    v = torch.cat([x, y], dim=1).double().numpy()
    out = torch.cat([out_x, out_y], dim=1).double().numpy()
    direction = v[:, None, :] - v[None, :, :]  # [i, j] = v_i - v_j
    length = np.maximum((direction**2).sum(axis=2), 1e-300)
    lam = ((out[:, None, :] - v[None, :, :]) * direction).sum(axis=2) / length
    residual = np.linalg.norm(out[:, None, :] - v[None, :, :] - lam[:, :, None] * direction, axis=2)
    fits = (lam >= -1e-5) & (lam <= 1 + 1e-5) & (residual < 1e-4) & (length > 1e-12)
    found = []
    for i in range(len(v)):
        if np.allclose(out[i], v[i], atol=1e-4):  # lambda ~ 1: the row itself, any partner fits
            found.append((i, 1.0))
            continue
        assert fits[i].any(), f"row {i} is no mixture of two batch rows"
        j = int(np.argmin(np.where(fits[i], residual[i], np.inf)))
        found.append((j, float(lam[i, j])))
    return found


def test_mixup_across_mixes_vectors_and_soft_labels_with_one_lambda():
    x_np, codes = labelled([10, 10, 10], dim=4)
    x, y = torch.from_numpy(x_np), one_hot(codes, 3)
    pipeline = parse_augmentations("mixup:0.4")  # no mode given: across, the default
    assert pipeline.steps == [Mixup(0.4, within=False)]
    out_x, out_y = pipeline(x, y, generator())
    assert out_x.shape == x.shape and out_y.shape == y.shape
    np.testing.assert_allclose(out_y.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    assert (out_y >= 0).all()
    partners = _mixing_partners(out_x, out_y, x, y)
    assert any(codes[i] != codes[j] for i, (j, _) in enumerate(partners))  # across classes
    assert (out_y.max(dim=1).values < 1 - 1e-6).any()  # some labels are soft


def test_mixup_within_only_mixes_samples_of_the_same_class():
    x_np, codes = labelled([12, 7, 5], dim=4)
    x, y = torch.from_numpy(x_np), one_hot(codes, 3)
    out_x, out_y = parse_augmentations("mixup:1:within")(x, y, generator(3))
    assert torch.equal(out_y, y)  # same-class partners keep one-hot labels
    partners = _mixing_partners(out_x, out_y, x, y)
    assert all(codes[i] == codes[j] for i, (j, _) in enumerate(partners))
    assert not torch.allclose(out_x, x)
    partner = Mixup(1.0, within=True).partners(y, generator(7))
    assert np.array_equal(codes[partner.numpy()], codes)
    assert sorted(partner.tolist()) == list(range(len(codes)))  # a permutation


def test_smote_appends_one_sample_per_minority_row_on_a_segment_to_a_near_neighbour():
    k = 3
    train, codes = labelled([40, 12, 6], dim=5)  # class 0 is the majority
    pipeline = parse_augmentations(f"smote:{k}").fit(train, codes, 3)
    batch_rows = np.array([0, 1, 2, 40, 41, 42, 43, 52, 53, 5])
    x, y = torch.from_numpy(train[batch_rows]), one_hot(codes[batch_rows], 3)
    y[-1] = torch.tensor([0.5, 0.5, 0.0])  # a mixed row belongs to no class: no synthetic sample
    out_x, out_y = pipeline(x, y, generator())
    minority_rows = (codes[batch_rows[:-1]] > 0).sum()
    assert len(out_x) == len(x) + minority_rows and out_y.shape == (len(x) + minority_rows, 3)
    assert torch.equal(out_x[: len(x)], x) and torch.equal(out_y[: len(x)], y)
    np.testing.assert_allclose(out_y.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    synthetic_codes = out_y[len(x) :].argmax(dim=1).numpy()
    assert (out_y[len(x) :].max(dim=1).values == 1).all() and (synthetic_codes > 0).all()
    assert sorted(synthetic_codes.tolist()) == sorted(
        codes[batch_rows[:-1]][codes[batch_rows[:-1]] > 0].tolist()
    )
    for point, c in zip(out_x[len(x) :].double().numpy(), synthetic_codes, strict=True):
        assert _on_segment_to_neighbour(point, train[codes == c].astype(np.float64), k), (point, c)


def _on_segment_to_neighbour(point: np.ndarray, members: np.ndarray, k: int) -> bool:
    """Whether `point` lies on a segment from a class member to one of its k nearest other members."""
    for a in members:
        distance = np.linalg.norm(members - a, axis=1)
        for b in members[np.argsort(distance)[1 : k + 1]]:
            direction = b - a
            u = (point - a) @ direction / (direction @ direction)
            if -1e-6 <= u <= 1 + 1e-6 and np.linalg.norm(point - a - u * direction) < 1e-4:
                return True
    return False


def test_smote_leaves_majority_batches_and_balanced_tasks_alone():
    train, codes = labelled([30, 10])
    pipeline = parse_augmentations("smote:5").fit(train, codes, 2)
    x, y = torch.from_numpy(train[:8]), one_hot(codes[:8], 2)
    out_x, out_y = pipeline(x, y, generator())
    assert out_x is x and out_y is y
    balanced, balanced_codes = labelled([10, 10])
    step = Smote(5)
    AugmentationPipeline([step]).fit(balanced, balanced_codes, 2)
    assert step.banks == {} and not step.minority.any()


def test_smote_uses_the_full_training_counts_when_given_and_skips_lone_vectors():
    train, codes = labelled([5, 5])
    step = Smote(2)
    AugmentationPipeline([step]).fit(train, codes, 2, class_counts=np.array([100, 5]))
    assert step.minority.tolist() == [False, True] and list(step.banks) == [1]
    lone, lone_codes = labelled([8, 1])
    pipeline = parse_augmentations("smote:2").fit(lone, lone_codes, 2)
    x, y = torch.from_numpy(lone[-1:]), one_hot(lone_codes[-1:], 2)
    out_x, _ = pipeline(x, y, generator())
    assert len(out_x) == 1  # its only bank vector is itself: no neighbour, no synthetic sample


def test_smote_written_after_mixup_still_makes_one_sample_per_minority_row():
    train, codes = labelled([30, 10], dim=8)
    x, y = torch.from_numpy(train[::2]), one_hot(codes[::2], 2)  # 15 majority, 5 minority rows
    for spec in ("smote:3,mixup:0.4", "mixup:0.4,smote:3"):  # the order puts mixup first
        out_x, out_y = parse_augmentations(spec).fit(train, codes, 2)(x, y, generator())
        assert len(out_x) == len(x) + 5, spec
        np.testing.assert_allclose(out_y.sum(dim=1).numpy(), 1.0, rtol=1e-6)


def test_views_is_a_marker_that_leaves_batches_alone():
    pipeline = parse_augmentations("views")
    x, y = torch.ones(3, 2), one_hot(np.array([0, 1, 0]), 2)
    assert pipeline.uses_views and pipeline(x, y, generator()) == (x, y)


def test_the_pipeline_is_deterministic_under_a_seeded_generator():
    train, codes = labelled([40, 10], dim=8)
    pipeline = parse_augmentations("smote:3,mixup:0.4,noise:0.2,dropout:0.1").fit(train, codes, 2)
    x, y = torch.from_numpy(train[::3]), one_hot(codes[::3], 2)
    first, second, other = (pipeline(x, y, generator(seed)) for seed in (1, 1, 2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].shape != other[0].shape or not torch.equal(first[0], other[0])
    np.testing.assert_allclose(first[1].sum(dim=1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("rows", "dim"), [(1, 3), (1023, 5), (1024, 5), (3000, 64)])
def test_column_stats_are_numpys_mean_and_std_to_the_bit(rows, dim):
    """Computed 1,024 rows at a time (no (n, d) float64 copy of x), yet equal to numpy's results."""
    rng = np.random.default_rng(rows)
    x = (rng.normal(size=(rows, dim)) * rng.uniform(0.01, 100, dim) + rng.uniform(-50, 50, dim)).astype(
        np.float32
    )
    mean, std = column_stats(x)
    assert np.array_equal(mean, x.mean(axis=0, dtype=np.float64))
    assert np.array_equal(std, x.std(axis=0, dtype=np.float64))
    assert np.array_equal(std, x.astype(np.float64).std(axis=0))

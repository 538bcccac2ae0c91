"""Training heads from a real store: the group-aware split, streamed batches (bounded buffer, views of the
same tile), the augmentation sample, training to near-perfect validation on a separable task, and the
one-line errors."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.storage.embedding_tables import Provenance, table_name
from heads.errors import HeadsError
from heads.tile_batches import BatchStream, TileCodes, TileIds, augmentation_sample, split_tiles
from heads.training import train
from tests.helpers import add_task, add_vectors, vector_store

KEY = "synthetic.v"
TILES_N, DIM, SLIDES = 400, 16, 20
FAST = {"epochs": 8, "batch_size": 32, "lr": 1e-2}  # a few hundred small steps: seconds on one thread


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def separable(n: int, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, codes): two well separated classes, mixed over every slide."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.arange(n) % 2)
    centres = rng.normal(size=(2, dim)) * 2.0
    return (centres[codes] + rng.normal(size=(n, dim)) + 3.0).astype(np.float32), codes


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """400 tiles on 20 slides; task tumour (binary, separable), tasks one (one class) and clumped (class
    b on a single slide)."""
    vectors, codes = separable(TILES_N)
    store = vector_store(tmp_path_factory.mktemp("train") / "store", vectors, slides=SLIDES, key=KEY)
    ids = [f"t{i:06d}" for i in range(TILES_N)]
    add_task(store, "tumour", {t: "tumour" if c else "normal" for t, c in zip(ids, codes, strict=True)})
    add_task(store, "one", {t: "x" for t in ids[:40]})
    add_task(store, "clumped", {t: "b" if i % SLIDES == 0 else "a" for i, t in enumerate(ids[:100])})
    return store, vectors, codes


@pytest.fixture(scope="module")
def trained(toy):
    store, _, _ = toy
    return train(store, KEY, "tumour", name="tumour-linear", **FAST)


def slide_of(tile_id: str) -> str:
    return f"slide{int(tile_id[1:]) % SLIDES}"


# -- the split ------------------------------------------------------------------------------------------


def test_split_keeps_every_slide_on_one_side_and_every_class_on_both(toy):
    store, _, codes = toy
    split = split_tiles(store, "tumour", KEY, validation=0.2, seed=0)
    assert split.group_by == "slide"
    assert not {slide_of(t) for t in split.train_ids} & {slide_of(t) for t in split.validation_ids}
    assert split.train_ids | split.validation_ids == {f"t{i:06d}" for i in range(TILES_N)}
    assert 0.1 <= len(split.validation_ids) / TILES_N <= 0.3
    assert split.classes == ["normal", "tumour"]
    for ids in (split.train_ids, split.validation_ids):
        assert set(split.class_counts(ids).values()) != {0} and min(split.class_counts(ids).values()) > 0
    assert sum(split.class_counts().values()) == len(split.train_ids)
    assert all(split.codes[f"t{i:06d}"] == c for i, c in enumerate(codes))
    assert split_tiles(store, "tumour", KEY, seed=0) == split
    assert split_tiles(store, "tumour", KEY, seed=1).validation_ids != split.validation_ids


def test_seeds_give_different_validation_slides_when_every_slide_has_its_own_class_mix(tmp_path):
    """20 slides, each with its own mix of 3 classes and its own count of labelled tiles: scikit-learn's
    StratifiedGroupKFold gave seeds 0, 1 and 2 the same folds here (the issue); the split now differs per
    seed, and each keeps slides apart and every class on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(5)
    mixes = rng.dirichlet([1, 1, 1], SLIDES)
    labelled = np.flatnonzero(
        rng.random(TILES_N) < rng.uniform(0.3, 1.0, SLIDES)[np.arange(TILES_N) % SLIDES]
    )
    codes = np.array([rng.choice(3, p=mixes[i % SLIDES]) for i in range(TILES_N)])[labelled]
    slides = labelled % SLIDES
    old = [
        frozenset(
            tuple(test)
            for _, test in StratifiedGroupKFold(5, shuffle=True, random_state=s).split(codes, codes, slides)
        )
        for s in range(3)
    ]
    assert len(set(old)) == 1
    vectors = rng.normal(size=(TILES_N, 4)).astype(np.float32) + 1
    store = vector_store(tmp_path / "store", vectors, slides=SLIDES, key=KEY)
    add_task(store, "mixes", {f"t{i:06d}": "abc"[c] for i, c in zip(labelled, codes, strict=True)})
    found = [split_tiles(store, "mixes", KEY, validation=0.2, seed=seed) for seed in range(3)]
    assert len({frozenset(split.validation_ids) for split in found}) == 3
    for split in found:
        assert not {slide_of(t) for t in split.train_ids} & {slide_of(t) for t in split.validation_ids}
        assert (
            min(split.class_counts().values()) > 0
            and min(split.class_counts(split.validation_ids).values()) > 0
        )


def test_split_holds_arrays_that_act_as_sets_and_mappings(toy):
    """The split's ids and codes are numpy arrays (no Python object per tile) behind the set and mapping
    interfaces the frozensets and dicts had."""
    store, _, codes = toy
    split = split_tiles(store, "tumour", KEY, validation=0.2, seed=0)
    assert isinstance(split.train_ids, TileIds) and split.train_ids.sorted.dtype.kind == "S"
    assert isinstance(split.codes, TileCodes) and split.codes.codes.dtype == np.int64
    as_dict = {f"t{i:06d}": int(c) for i, c in enumerate(codes)}
    assert split.codes == as_dict and dict(split.codes) == as_dict and len(split.codes) == TILES_N
    train = split.train_codes()
    assert train == {t: as_dict[t] for t in split.train_ids} and list(train) == sorted(split.train_ids)
    assert split.validation_codes() == {t: as_dict[t] for t in split.validation_ids}
    some = sorted(split.validation_ids)[:5]
    assert all(t in split.validation_ids and t not in split.train_ids for t in some)
    assert "nope" not in split.train_ids and 3 not in split.train_ids and "nope" not in split.codes
    assert split.train_ids & split.validation_ids == frozenset()
    assert split.class_counts(frozenset(some)) == split.class_counts(TileIds(some))
    with pytest.raises(KeyError, match="nope"):
        split.codes["nope"]
    with pytest.raises(KeyError, match="nope"):
        split.class_counts({"nope"})


def test_tile_ids_and_codes_from_str_arrow_and_dicts():
    ids = ["é-2", "b", "a", "日本", "b"]
    made = TileIds(ids)
    assert list(made) == sorted(set(ids)) and len(made) == 4 and made == set(ids)
    assert made == TileIds(pa.chunked_array([pa.array(ids[:2]), pa.array(ids[2:])]))
    assert "日本" in made and "日" not in made and "" not in made and len(TileIds()) == 0
    at, found = made.lookup(pa.array(["日本", "c", "a"]))
    assert found.tolist() == [True, False, True] and list(made)[at[0]] == "日本"
    codes = {"x2": 1, "é": 0, "x1": 2}
    held = TileCodes.of(codes)
    assert list(held) == sorted(codes) and held["é"] == 0 and held == codes and TileCodes.of(held) is held
    assert held.subset(TileIds(["x1", "x2"])).codes.tolist() == [2, 1]
    assert TileCodes.of({}) == {} and len(TileCodes.of({})) == 0


def test_split_by_tile_when_asked(toy):
    split = split_tiles(toy[0], "tumour", KEY, group_by="tile", validation=0.25, seed=0)
    assert split.group_by == "tile" and abs(len(split.validation_ids) - TILES_N / 4) <= 2


# -- streaming --------------------------------------------------------------------------------------------


def test_stream_reads_arrow_batches_and_holds_at_most_buffer_plus_one_batch(tmp_path):
    """3000 rows through a 500-row buffer in 256-row Arrow batches: every wanted tile once per epoch,
    shuffled, reproducible, never more than buffer + one Arrow batch held."""
    n, read, buffer = 3000, 256, 500
    vectors = np.arange(n, dtype=np.float32)[:, None].repeat(4, axis=1)  # row i holds i
    store = vector_store(tmp_path / "store", vectors, slides=4, key=KEY)
    wanted = {f"t{i:06d}": i % 3 for i in range(0, n, 2)}  # every other tile
    stream = BatchStream(
        store.embeddings(KEY).columns(), wanted, 64, shuffle_buffer=buffer, seed=3, read_batch=read
    )
    seen = []
    for x, y, ids in stream.epoch(0):
        assert x.dtype == np.float32 and x.shape[1] == 4 and len(x) <= 64
        assert [f"t{int(v):06d}" for v in x[:, 0]] == ids  # each row's vector is its tile's
        assert y.tolist() == [wanted[t] for t in ids]
        seen += ids
    counters = stream.counters
    assert sorted(seen) == sorted(wanted)
    assert counters.arrow_batches >= math.ceil(n / read) and counters.rows_read == n
    assert buffer <= counters.peak_rows <= buffer + read
    positions = [int(t[1:]) for t in seen]
    assert positions != sorted(positions)  # shuffled across the buffer ...
    assert abs(np.corrcoef(np.arange(len(positions)), positions)[0, 1]) < 0.9  # ... not only within it
    again = BatchStream(
        store.embeddings(KEY).columns(), wanted, 64, shuffle_buffer=buffer, seed=3, read_batch=read
    )
    assert [t for _, _, ids in again.epoch(0) for t in ids] == seen
    assert [t for _, _, ids in again.epoch(1) for t in ids] != seen


def test_stream_of_tile_codes_equals_stream_of_a_dict(tmp_path):
    vectors = np.arange(700, dtype=np.float32)[:, None].repeat(3, axis=1)
    store = vector_store(tmp_path / "store", vectors, slides=3, key=KEY)
    wanted = {f"t{i:06d}": i % 2 for i in range(0, 700, 3)}

    def batches(codes):
        stream = BatchStream(store.embeddings(KEY).columns(), codes, 32, shuffle_buffer=100, read_batch=64)
        return [(x.tolist(), y.tolist(), ids) for x, y, ids in stream.epoch(2)]

    assert batches(TileCodes.of(wanted)) == batches(wanted)


def test_validation_stream_reads_in_order_without_a_buffer(tmp_path):
    vectors = np.arange(1000, dtype=np.float32)[:, None].repeat(2, axis=1)
    store = vector_store(tmp_path / "store", vectors, slides=2, key=KEY)
    wanted = {f"t{i:06d}": 0 for i in range(0, 1000, 3)}
    stream = BatchStream(store.embeddings(KEY).columns(), wanted, 100, shuffle=False, read_batch=128)
    ids = [t for _, _, batch in stream.epoch(0) for t in batch]
    assert sorted(ids) == sorted(wanted) and stream.counters.peak_rows <= 128


def views_store(path: Path, tiles: int = 60):
    """Tile i has 1 + i % 4 views; the vector of (tile i, view v) is [i, v, noise...]."""
    rng = np.random.default_rng(0)
    store = vector_store(path, np.zeros((tiles, 4), np.float32), slides=3, key="base.v")
    provenance = Provenance.given(KEY, 4)
    writer = EmbeddingWriter(store.catalog, table_name(KEY), provenance, views=3)
    ids, views, vectors = [], [], []
    for i in range(tiles):
        for v in range(1 + i % 4):
            ids.append(f"t{i:06d}")
            views.append(v)
            vectors.append([i, v, *rng.normal(size=2)])
    order = rng.permutation(len(ids))  # views of a tile spread over the table
    writer.write([ids[k] for k in order], np.array(views)[order], np.array(vectors, np.float32)[order])
    return store


def test_views_one_per_tile_and_epoch_from_that_tile_only(tmp_path):
    tiles = 60
    store = views_store(tmp_path / "store", tiles)
    wanted = {f"t{i:06d}": i % 2 for i in range(tiles)}

    def draws(seed: int, epoch: int) -> dict[str, int]:
        stream = BatchStream(store.embeddings(KEY), wanted, 16, views=True, seed=seed, read_batch=32)
        chosen = {}
        for x, _, ids in stream.epoch(epoch):
            for row, tile in zip(x, ids, strict=True):
                assert f"t{int(row[0]):06d}" == tile  # the view is of this very tile
                assert 0 <= row[1] < 1 + int(tile[1:]) % 4  # and one it has
                assert tile not in chosen  # one view per tile per epoch
                chosen[tile] = int(row[1])
        assert set(chosen) == set(wanted)
        return chosen

    epochs = [draws(0, e) for e in range(12)]
    assert draws(0, 5) == epochs[5]  # deterministic in (seed, epoch)
    assert draws(1, 5) != epochs[5]
    per_tile = defaultdict(set)
    for chosen in epochs:
        for tile, view in chosen.items():
            per_tile[tile].add(view)
    assert all(per_tile[f"t{i:06d}"] == {0} for i in range(0, tiles, 4))  # one view: always it
    three_or_more = [per_tile[f"t{i:06d}"] for i in range(tiles) if i % 4 == 3]
    assert np.mean([len(v) for v in three_or_more]) >= 3  # 4 views over 12 epochs: most are drawn
    assert Counter(v for chosen in epochs for v in chosen.values())[3] > 0


def test_train_with_views_augmentation_reads_stored_views(tmp_path):
    store = views_store(tmp_path / "store", 60)
    add_task(store, "odd", {f"t{i:06d}": "odd" if i % 2 else "even" for i in range(60)})
    result = train(store, KEY, "odd", augment="views", epochs=2, batch_size=16, group_by="tile")
    assert result.card.augment == "views" and result.counters.rows_kept == 2 * len(result.split.train_ids)
    assert result.counters.rows_read > 2 * 60  # every view was read, one kept per tile


def test_augmentation_sample_is_bounded_and_keeps_the_minority_whole(toy):
    store, vectors, _ = toy
    codes = {f"t{i:06d}": int(i < 30) for i in range(TILES_N)}  # class 1: 30 tiles
    x, y = augmentation_sample(store.embeddings(KEY).columns(), codes, 2, limit=100, seed=0)
    assert len(x) == 100 and (y == 1).sum() == 30 and (y == 0).sum() == 70
    rows = {tuple(v) for v in vectors.tolist()}
    assert all(tuple(v) in rows for v in x.tolist())
    assert set(map(tuple, x[y == 1].tolist())) == set(map(tuple, vectors[:30].tolist()))
    assert set(map(tuple, x[y == 0].tolist())) <= set(map(tuple, vectors[30:].tolist()))


def test_the_sample_reservoir_keeps_the_rows_with_the_smallest_keys_across_chunks():
    from heads.tile_batches import _reservoir_add

    rng = np.random.default_rng(0)
    all_keys, all_x = rng.random(1000), rng.normal(size=(1000, 3)).astype(np.float32)
    keys, slots = np.full(50, np.inf), np.empty((50, 3), np.float32)
    for start in range(0, 1000, 64):  # chunks like Arrow batches, each evicting some kept rows
        _reservoir_add(keys, slots, all_keys[start : start + 64], all_x[start : start + 64])
    smallest = np.argsort(all_keys)[:50]
    assert sorted(keys) == sorted(all_keys[smallest])
    assert {tuple(v) for v in slots.tolist()} == {tuple(v) for v in all_x[smallest].tolist()}


# -- training ---------------------------------------------------------------------------------------------


def test_separable_task_reaches_near_perfect_validation(trained):
    result = trained
    assert result.validation["balanced_accuracy"] >= 0.97 and result.validation["auroc"] >= 0.99
    assert result.card.positive_class == "tumour" and result.card.classes == ["normal", "tumour"]
    assert 0 < result.threshold < 1 and result.card.threshold == result.threshold
    assert result.estimator.threshold_ == result.threshold
    assert result.validation["f1_at_threshold"] >= result.validation["f1_at_0.5"]
    assert 1 <= len(result.history) <= FAST["epochs"] and result.card.epochs == len(result.history)
    assert {"epoch", "train_loss", "validation_auroc", "validation_f1:tumour"} <= set(result.history[0])
    assert result.card.tiles_train + result.card.tiles_validation == TILES_N
    assert result.card.tiles_validation == len(result.split.validation_ids)
    assert result.card.group_by == "slide" and result.card.weights_sha256 == "0" * 64
    assert (result.path / "card.json").is_file() and (result.path / "head.pt").is_file()
    epochs = len(result.history)  # the training tiles streamed once per epoch, in one Arrow batch each
    assert result.counters.rows_kept == epochs * len(result.split.train_ids)
    assert result.counters.arrow_batches == epochs


def test_early_stopping_keeps_the_best_epoch(toy):
    store, _, _ = toy
    result = train(
        store,
        KEY,
        "tumour",
        name="early",
        epochs=30,
        patience=2,
        early_stopping="loss",
        lr=0.05,
        batch_size=32,
    )
    losses = [r["validation_loss"] for r in result.history]
    assert result.card.best_epoch == 1 + int(np.argmin(losses))
    assert len(result.history) <= 30 and result.validation["loss"] == pytest.approx(min(losses))


def test_mlp_head_trains(toy):
    result = train(toy[0], KEY, "tumour", head="mlp", name="mlp", hidden=(8,), **FAST)
    assert result.card.kind == "mlp" and result.validation["balanced_accuracy"] >= 0.95


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "options", "parts"),
    [
        ("nope", {}, ["unknown task 'nope'", "tumour"]),
        ("one", {}, ["one class", "another class"]),
        ("clumped", {}, ["one slide group", "--group-by tile"]),
        ("tumour", {"head": "forest"}, ["'forest'", "linear, mlp"]),
        ("tumour", {"depth": 3}, ["no parameter depth", "lr"]),
        ("tumour", {"lr": -1}, ["lr must be", "> 0"]),
        ("tumour", {"augment": "blur:3"}, ["unknown augmentation 'blur'", "noise"]),
        ("tumour", {"validation": 0.9}, ["--validation 0.9", "(0, 0.5]"]),
        ("tumour", {"name": "a/b"}, ["--name 'a/b'", "letters"]),
    ],
)
def test_bad_input_is_a_one_line_heads_error(toy, task, options, parts):
    with pytest.raises(HeadsError) as error:
        train(toy[0], KEY, task, **options)
    message = str(error.value)
    assert "\n" not in message and all(p in message for p in parts), message


def test_backbone_without_embeddings_names_the_embed_command(toy):
    with pytest.raises(HeadsError, match=r"embedstore embed .* --backbone missing\.v"):
        train(toy[0], "missing.v", "tumour")


def test_existing_name_needs_overwrite(toy, trained):
    store, _, _ = toy
    with pytest.raises(HeadsError, match="--overwrite"):
        train(store, KEY, "tumour", name="tumour-linear", epochs=1)


def test_labels_of_tiles_the_backbone_lacks(tmp_path):
    vectors, codes = separable(40)
    store = vector_store(tmp_path / "store", vectors, slides=4, key=KEY)
    extra = [
        {"tile_id": f"u{i}", "source_id": "src0", "x": i, "y": 1, "level": 0, "slide": "s"} for i in range(4)
    ]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(extra, schema=TILES_SCHEMA))
    add_vectors(store, "other.v", np.zeros((1, 4), np.float32))  # embeds t000000 only
    add_task(store, "late", {f"u{i}": "ab"[i % 2] for i in range(4)})
    with pytest.raises(HeadsError, match=r"no embeddings of task 'late'.*embedstore embed"):
        train(store, "other.v", "late")


def test_package_functions_stay_callable_once_their_modules_are_imported():
    import heads
    import heads.prediction
    import heads.training
    import heads.tuning

    assert heads.train is heads.training.train and heads.predict is heads.prediction.predict
    assert heads.tune is heads.tuning.tune and callable(heads.heatmap)

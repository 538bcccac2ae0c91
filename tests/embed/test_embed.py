"""Embedding: incremental, resumable, provenance-checked; views; reading back. Real LanceDB and backbones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import embedstore
from cli.main import app
from embedstore.core.errors import BackboneError, EmbedstoreError
from embedstore.embed.augment import augment_view
from embedstore.embed.local import embed
from embedstore.embed.options import AUGMENTATIONS, EmbedOptions
from embedstore.storage.embedding_tables import Provenance, table_name
from tests.helpers import write_tiles

FAST = "handcrafted.color_texture"  # no weights, builds instantly
KEY = "resnet18.random"
OPTS = {"progress": False, "workers": 1, "batch_size": 8}


def _store(tmp_path: Path, n: int = 10, seed: int = 0, name: str = "store", **ingest) -> embedstore.Store:
    store = embedstore.init(tmp_path / name)
    folder = write_tiles(tmp_path / f"tiles_{seed}", n, seed)
    store.ingest([folder], embedstore.IngestOptions(task="t", progress=False, **ingest))
    return store


def _rows(store: embedstore.Store, key: str = FAST) -> list[tuple[str, int]]:
    table = store.catalog.read(table_name(key), columns=["tile_id", "view"])
    return list(zip(table.column("tile_id").to_pylist(), table.column("view").to_pylist(), strict=True))


def _vectors(store: embedstore.Store, key: str = FAST, view: int = 0) -> dict[str, np.ndarray]:
    X, ids, _ = store.embeddings(key).views(view).to_numpy()
    return dict(zip(ids.tolist(), X, strict=True))


def test_incremental_embeds_only_newwrite_tiles(tmp_path):
    store = _store(tmp_path, n=6)
    first = store.embed(FAST, **OPTS)  # the Store entry point
    assert first.rows_written == 6 and first.table == "emb__handcrafted_color_texture"
    store.ingest([write_tiles(tmp_path / "more", 4, seed=1)], embedstore.IngestOptions(progress=False))
    second = embed(store.catalog, FAST, **OPTS)
    assert second.rows_written == 4 and second.rows_present == 6
    rows = _rows(store)
    assert len(rows) == len(set(rows)) == 10
    assert {tile for tile, _ in rows} == store.catalog.tile_ids()
    again = embed(store.catalog, FAST, **OPTS)
    assert again.rows_written == 0 and "up to date" in again.summary()
    assert "tiles/s" in second.summary() and second.tiles_per_s > 0


def test_resume_after_crash_gives_every_row_once(tmp_path):
    store = _store(tmp_path, n=12)

    def crash(progress):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first chunk was written

    with pytest.raises(KeyboardInterrupt):
        embed(store.catalog, FAST, views=1, chunk_rows=4, on_chunk=crash, **{**OPTS, "batch_size": 4})
    assert len(_rows(store)) == 4
    report = embed(store.catalog, FAST, views=1, chunk_rows=4, **{**OPTS, "batch_size": 4})
    assert report.rows_written == 24 - 4
    rows = _rows(store)
    assert len(rows) == len(set(rows)) == 24
    assert set(rows) == {(tile, view) for tile in store.catalog.tile_ids() for view in (0, 1)}


def test_other_weights_for_the_same_key_are_refused(tmp_path):
    import timm

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        files.append(tmp_path / f"w{seed}.pth")
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), files[-1])
    store = _store(tmp_path, n=4)
    embed(store.catalog, "resnet18.mylab", weights=files[0], **OPTS)
    table = store.catalog.dataset("emb__resnet18_mylab")
    version, rows = table.version, table.count_rows()
    store.ingest([write_tiles(tmp_path / "more", 2, seed=3)], embedstore.IngestOptions(progress=False))
    with pytest.raises(BackboneError, match="weights"):
        embed(store.catalog, "resnet18.mylab", weights=files[1], **OPTS)
    table = store.catalog.dataset("emb__resnet18_mylab")
    assert (table.version, table.count_rows()) == (version, rows)
    recorded = Provenance.from_metadata(table.schema.metadata)
    assert recorded.backbone == "resnet18.mylab" and recorded.input_size == 224
    assert set(recorded.versions) >= {"torch", "timm", "embedstore"}


def test_views_are_deterministic_and_view0_is_the_plain_embedding(tmp_path):
    plain = _store(tmp_path, n=4, name="plain")
    embed(plain.catalog, FAST, **OPTS)
    viewed = _store(tmp_path, n=4, name="viewed")
    report = embed(viewed.catalog, FAST, views=2, augment="flip,rot90,hed-jitter,blur", **OPTS)
    assert report.rows_written == 12 and report.tiles_embedded == 4
    assert sorted(v for _, v in _rows(viewed)) == [0] * 4 + [1] * 4 + [2] * 4
    view0, base = _vectors(viewed, view=0), _vectors(plain)
    assert set(view0) == set(base)
    for tile in base:
        np.testing.assert_array_equal(view0[tile], base[tile])
    view2 = _vectors(viewed, view=2)
    assert any(not np.allclose(view2[t], view0[t]) for t in base)
    viewed.catalog.delete(table_name(FAST), "view = 2")  # lose a view, as a crash would
    assert embed(viewed.catalog, FAST, views=2, **OPTS).rows_written == 4
    again = _vectors(viewed, view=2)
    for tile in base:
        np.testing.assert_allclose(again[tile], view2[tile], rtol=1e-6)
    recorded = Provenance.from_metadata(viewed.catalog.dataset(table_name(FAST)).schema.metadata)
    assert recorded.augment == ("flip", "rot90", "hed-jitter", "blur")
    assert Provenance.from_metadata(plain.catalog.dataset(table_name(FAST)).schema.metadata).augment == ()
    assert embed(plain.catalog, FAST, views=1, augment="flip,blur", **OPTS).rows_written == 4
    assert Provenance.from_metadata(plain.catalog.dataset(table_name(FAST)).schema.metadata).augment == (
        "flip",
        "blur",
    )
    with pytest.raises(EmbedstoreError, match="--augment flip,blur"):
        embed(plain.catalog, FAST, views=2, augment="rot90", **OPTS)


def test_augment_view_is_seeded_per_tile_and_view():
    rgb = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    ops = AUGMENTATIONS
    assert augment_view(rgb, "t", 0, ops) is rgb
    np.testing.assert_array_equal(augment_view(rgb, "t", 1, ops), augment_view(rgb, "t", 1, ops))
    views = [augment_view(rgb, "t", v, ops) for v in range(1, 5)]
    assert all(v.shape == rgb.shape and v.dtype == np.uint8 for v in views)
    assert any(not np.array_equal(views[0], v) for v in views[1:])
    with pytest.raises(EmbedstoreError, match="--augment 'flip,sharpen' must be distinct names among"):
        EmbedOptions(augment="flip,sharpen")
    assert EmbedOptions(augment="flip, blur").augment == ("flip", "blur")


def test_nan_vectors_are_refused_naming_the_tile(tmp_path):
    import timm

    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["bn1.running_var"][:] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    store = _store(tmp_path, n=3)
    with pytest.raises(EmbedstoreError, match=r"gave tile \w+ \(view 0\).*NaN"):
        embed(store.catalog, "resnet18.broken", weights=tmp_path / "nan.pth", **OPTS)
    assert "emb__resnet18_broken" not in store.catalog.table_names()


def test_float16_storage(tmp_path):
    store = _store(tmp_path, n=4)
    embed(store.catalog, FAST, store_dtype="float16", **OPTS)
    vector_type = store.catalog.dataset(table_name(FAST)).schema.field("vector").type
    assert vector_type.value_type == pa.float16() and vector_type.list_size == 51
    X, ids, labels = store.embeddings(FAST).task("t").to_numpy()
    assert X.dtype == np.float32 and X.shape == (4, 51) and np.isfinite(X).all()
    store.ingest([write_tiles(tmp_path / "more", 2, seed=5)], embedstore.IngestOptions(progress=False))
    assert embed(store.catalog, FAST, **OPTS).store_dtype == "float16"  # the table's dtype is kept
    with pytest.raises(EmbedstoreError, match="--store-dtype float16"):
        embed(store.catalog, FAST, store_dtype="float32", limit=1, **OPTS)
    with pytest.raises(EmbedstoreError, match="--precision fp32"):
        embed(store.catalog, FAST, precision="bf16", **OPTS)


def test_bf16_matches_fp32_closely(tmp_path):
    store = _store(tmp_path, n=4)
    embed(store.catalog, KEY, **OPTS)
    other = embedstore.init(tmp_path / "other")
    other.ingest([tmp_path / "tiles_0"], embedstore.IngestOptions(progress=False))
    report = embed(other.catalog, KEY, precision="bf16", **OPTS)
    assert report.precision == "bf16"
    a, b = _vectors(store, KEY), _vectors(other, KEY)
    cosine = [a[t] @ b[t] / np.linalg.norm(a[t]) / np.linalg.norm(b[t]) for t in a]
    assert min(cosine) > 0.98


def test_tiles_without_pixels_are_read_from_their_source(tmp_path):
    with_pixels = _store(tmp_path, n=4, name="pixels")
    without = _store(tmp_path, n=4, name="refs", codec="none")
    assert without.catalog.read("tiles", columns=["pixels"]).column("pixels").null_count == 4
    embed(with_pixels.catalog, FAST, views=1, **OPTS)
    embed(without.catalog, FAST, views=1, workers=0, **{k: v for k, v in OPTS.items() if k != "workers"})
    for view in (0, 1):
        a, b = _vectors(with_pixels, view=view), _vectors(without, view=view)
        assert set(a) == set(b)
        for tile in a:
            np.testing.assert_array_equal(a[tile], b[tile])


def test_slide_tiles_without_pixels_match_stored_ones(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "slide.png")
    options = {
        "kind": "slide",
        "mpp": 0.25,
        "target_mpp": 0.5,
        "tile_size": 16,
        "min_tissue": 0.0,
        "progress": False,
    }
    stores = []
    for codec in ("png", "none"):
        store = embedstore.init(tmp_path / codec)
        store.ingest([tmp_path / "slide.png"], embedstore.IngestOptions(codec=codec, **options))
        embed(store.catalog, FAST, **OPTS)
        stores.append(_vectors(store))
    assert len(stores[0]) == 12 and stores[0].keys() == stores[1].keys()
    for tile, vector in stores[0].items():
        np.testing.assert_array_equal(vector, stores[1][tile])


def test_missing_source_file_is_a_clear_error(tmp_path):
    store = _store(tmp_path, n=2, codec="none")
    for png in (tmp_path / "tiles_0").rglob("*.png"):
        png.unlink()
    with pytest.raises(EmbedstoreError, match="no stored pixels"):
        embed(store.catalog, FAST, **OPTS)


def test_empty_store_and_bad_options(tmp_path):
    store = embedstore.init(tmp_path / "empty")
    with pytest.raises(EmbedstoreError, match="no tiles; run `embedstore ingest` first"):
        embed(store.catalog, FAST, progress=False)
    with pytest.raises(EmbedstoreError, match="--batch-size"):
        embed(store.catalog, FAST, batch_size=0)
    with pytest.raises(EmbedstoreError, match="--precision 'int8' must be one of fp32|bf16|fp16"):
        EmbedOptions(precision="int8")
    with pytest.raises(EmbedstoreError, match="--backbone '' must be a non-empty name"):
        embed(store.catalog, "", progress=False)


def test_cli_exit_codes_and_summary(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    embedstore.init(empty)
    result = runner.invoke(app, ["embed", str(empty), "--backbone", FAST])
    assert result.exit_code == 2 and "run `embedstore ingest` first" in result.output
    store = _store(tmp_path, n=3)
    result = runner.invoke(app, ["embed", str(store.root), "--backbone", "resnet18.randon"])
    assert result.exit_code == 2 and "resnet18.random" in result.output
    missing = tmp_path / "nope.pth"
    result = runner.invoke(
        app, ["embed", str(store.root), "--backbone", "resnet18.mine", "--weights", str(missing)]
    )
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: weights path '{missing}' does not exist; check the path given to --weights"
    ]
    result = runner.invoke(
        app,
        [
            "embed",
            str(store.root),
            "--backbone",
            FAST,
            "--no-progress",
            "--workers",
            "1",
            "--views",
            "1",
            "--augment",
            "flip",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "emb__handcrafted_color_texture: 6 rows written (3 tiles x 2 views)" in result.output


def test_a_table_made_meanwhile_by_another_run_must_match_this_runs_provenance(tmp_path):
    """Run A decided to create the table; run B created it first with bf16: A's first write refuses."""
    from embedstore.embed.writer import EmbeddingWriter

    store = _store(tmp_path, n=2)
    base = dict(backbone="x.y", weights_sha256="0" * 64, dim=3, input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    run_a = EmbeddingWriter(
        store.catalog,
        "emb__x_y",
        Provenance(**base, resize="bicubic", precision="fp32", store_dtype="float32"),
    )
    run_b = EmbeddingWriter(
        store.catalog,
        "emb__x_y",
        Provenance(**base, resize="bicubic", precision="bf16", store_dtype="float32"),
    )
    vectors = np.ones((2, 3), np.float32)
    assert run_b.write(["t1", "t2"], np.zeros(2, np.int16), vectors) == 2
    with pytest.raises(EmbedstoreError, match="embedded in bf16; pass --precision bf16"):
        run_a.write(["t1", "t3"], np.zeros(2, np.int16), vectors)
    assert store.catalog.dataset("emb__x_y").count_rows() == 2


def test_the_cuda_staging_copy_keeps_values_and_layout():
    """On CUDA a batch that is not page-locked is copied into a pinned buffer first; the copy must keep
    values and layout, and two batches in flight must not share a buffer (the copy itself is plain torch,
    so it is checked here with unpinned buffers)."""
    import torch

    from embedstore.embed.forward import StagingRing

    ring = StagingRing(pin=False)
    nhwc = torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    staged, first = ring.stage(nhwc)
    assert torch.equal(staged, nhwc) and staged.is_contiguous(memory_format=torch.channels_last)
    nchw = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    staged_next, second = ring.stage(nchw)
    assert torch.equal(staged_next, nchw) and second != first
    assert torch.equal(staged, nhwc), "staging the next batch overwrote the one still in flight"
    assert ring.stage(nchw)[1] == first  # the ring: the first buffer, once its batch was sent


class _Cluster:
    """The two figures actor_shape reads from Ray: total resources and each node's."""

    def __init__(self, *node_cpus: int) -> None:
        self.node_cpus = node_cpus

    def cluster_resources(self) -> dict:
        return {"CPU": float(sum(self.node_cpus))}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": float(n)}} for n in self.node_cpus]


@pytest.mark.parametrize(
    "nodes, gpus, workers, threads, expected",
    [
        ((2,), 0, None, None, (1, 2)),  # this machine
        ((16, 16), 0, None, None, (8, 4)),
        ((4, 4, 4), 0, None, None, (3, 4)),  # an actor must fit on one node
        ((2,), 0, 2, None, (2, 1)),  # --workers alone: the CPUs shared among them
        ((16,), 0, None, 2, (8, 2)),  # --threads alone: as many actors as fit
        ((8,), 4, None, None, (4, 1)),  # one actor per GPU
        ((4,), 0, 1, 16, (1, 4)),  # more threads than a node has: capped
    ],
)
def test_ray_actor_shape(nodes, gpus, workers, threads, expected):
    from embedstore.embed.ray_engine import actor_shape

    assert actor_shape(_Cluster(*nodes), gpus, workers, threads) == expected


def test_ray_cpu_actors_get_one_malloc_arena_unless_told_otherwise(store, monkeypatch):
    from embedstore.embed.ray_engine import actor_env

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert actor_env(store.catalog, on_gpu=False, reuse_memory=True) == {"MALLOC_ARENA_MAX": "1"}
    assert actor_env(store.catalog, on_gpu=True, reuse_memory=True) == {}
    assert actor_env(store.catalog, on_gpu=False, reuse_memory=False) == {}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert actor_env(store.catalog, on_gpu=False, reuse_memory=True) == {"MALLOC_ARENA_MAX": "4"}


def _two_datasets(tmp_path: Path) -> embedstore.Store:
    """A store of 4 tiles of dataset 'a' and 6 of dataset 'b'."""
    store = _store(tmp_path, n=4, dataset="a")
    more = write_tiles(tmp_path / "tiles_b", 6, seed=1)
    store.ingest([more], embedstore.IngestOptions(task="t", dataset="b", progress=False))
    return store


def _dataset_of(store: embedstore.Store) -> dict[str, str]:
    tiles = store.catalog.read("tiles", columns=["tile_id", "dataset"])
    return dict(zip(tiles.column("tile_id").to_pylist(), tiles.column("dataset").to_pylist(), strict=True))


def test_where_embeds_the_matching_tiles_and_a_later_run_adds_the_rest(tmp_path):
    store = _two_datasets(tmp_path)
    dataset = _dataset_of(store)
    first = store.embed(FAST, where="dataset = 'a'", **OPTS)  # the Python API
    assert (first.rows_written, first.tiles_matched, first.tiles_total) == (4, 4, 10)
    assert {dataset[tile] for tile, _ in _rows(store)} == {"a"} and len(_rows(store)) == 4
    assert "(--where \"dataset = 'a'\": 4 of 10 tiles): 4 rows written" in first.summary()
    again = embed(store.catalog, FAST, where="dataset = 'a'", **OPTS)
    assert again.rows_written == 0 and again.rows_present == 4
    assert "4 of 10 tiles): up to date (4 rows for 4 tiles)" in again.summary()
    rest = embed(store.catalog, FAST, where="dataset = 'b' OR x >= 0", **OPTS)  # matches every tile
    assert (rest.rows_written, rest.rows_present, rest.tiles_matched) == (6, 4, 10)
    rows = _rows(store)
    assert len(rows) == len(set(rows)) == 10 and {tile for tile, _ in rows} == store.catalog.tile_ids()
    assert embed(store.catalog, FAST, **OPTS).rows_written == 0


def test_where_refuses_bad_sql_and_a_filter_matching_nothing_before_any_work(tmp_path, monkeypatch):
    from embedstore.embed import plan

    store = _two_datasets(tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("the backbone was resolved before --where was checked")

    monkeypatch.setattr(plan, "resolve_backbone", no_model)
    with pytest.raises(EmbedstoreError, match=r"--where 'colour = 1' is not a filter.*columns: .*dataset"):
        embed(store.catalog, FAST, where="colour = 1", **OPTS)
    with pytest.raises(EmbedstoreError, match="--where"):
        EmbedOptions(where="x > 1; drop table tiles")
    with pytest.raises(
        EmbedstoreError,
        match=r"nothing to embed: no tile matches --where \"dataset = 'c'\" \(of 10 tiles; datasets: a, b\)",
    ):
        embed(store.catalog, FAST, where="dataset = 'c'", **OPTS)
    assert not store.catalog.has_table(table_name(FAST))


def test_cli_where(tmp_path):
    store = _two_datasets(tmp_path)
    runner = CliRunner()
    base = ["embed", str(store.root), "--backbone", FAST, "--no-progress", "--workers", "0"]
    result = runner.invoke(app, [*base, "--where", "dataset = 'b'"])
    assert result.exit_code == 0, result.output
    assert "emb__handcrafted_color_texture (--where \"dataset = 'b'\": 6 of 10 tiles): 6 rows written" in (
        result.output
    )
    result = runner.invoke(app, [*base, "--where", "dataset = 'none'"])
    assert result.exit_code == 2 and "no tile matches --where" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, [*base, "--where", "dataset = 'a' LIMIT 3"])
    assert result.exit_code == 2 and "is not a filter over the tile columns" in result.output
    result = runner.invoke(app, [*base, "--json"])
    assert result.exit_code == 0, result.output
    assert '"rows_written": 4' in result.output and '"tiles_matched": null' in result.output

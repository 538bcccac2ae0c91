"""Layer keys `KEY@stageN[+M...]`: widths, values, one early-exiting forward, errors, embed, CLI."""

from __future__ import annotations

import dataclasses
import json
from functools import cache

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.backbones import (
    BackboneSpec,
    backbone_layers,
    get_backbone,
    register_backbone,
    unregister_backbone,
)
from embedstore.backbones.layers import parse_layer_key
from embedstore.core.errors import BackboneError
from embedstore.embed.forward import Forward
from embedstore.storage.embedding_tables import PROVENANCE_KEY, Provenance, check_compatible, table_name
from tests.helpers import write_tiles

RESNET = "resnet18.random"
RESNET_WIDTHS = [("stage0", 64), ("stage1", 128), ("stage2", 256), ("stage3", 512)]


def pixels(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8))


@cache
def features(key: str) -> torch.Tensor:
    """The features of one fixed batch of 2 images, computed once per key."""
    with torch.inference_mode():
        return get_backbone(key).build()(pixels(2, get_backbone(key).spec.input_size))


# --- keys, widths, values ---------------------------------------------------------------------------------


def test_parse_layer_key_sorts_and_accepts_both_spellings():
    assert parse_layer_key("a.b@stage5") == ("a.b", (5,))
    assert parse_layer_key("a.b@stage6+4+stage5+4") == ("a.b", (4, 5, 6))
    assert parse_layer_key("hf-hub:org/name@stage1") == ("hf-hub:org/name", (1,))


def test_layer_key_has_the_stage_width_and_the_base_weights_and_preprocessing():
    assert backbone_layers(RESNET) == RESNET_WIDTHS
    assert backbone_layers(f"{RESNET}@stage1") == RESNET_WIDTHS  # the base key's layers
    base, layer = get_backbone(RESNET), get_backbone(f"{RESNET}@stage2")
    assert layer.spec.key == f"{RESNET}@stage2" and layer.spec.dim == 256 and layer.layer == "stage2"
    assert "stage2" in layer.spec.description
    assert layer.weights_sha256() == base.weights_sha256()
    assert (layer.spec.input_size, layer.spec.mean, layer.spec.std) == (224, base.spec.mean, base.spec.std)
    assert features(f"{RESNET}@stage2").shape == (2, 256)
    assert features(f"{RESNET}@stage2").dtype == torch.float32


def test_stage_features_are_timm_intermediates_pooled():
    """Independent oracle: timm's own forward_intermediates (index 3 = layer3 = stage2), mean over H, W."""
    model = get_backbone(RESNET).build()
    x = pixels(2)
    with torch.inference_mode():
        normalised = (x.float() / 255 - model.mean) / model.std
        (inner,) = model.net.forward_intermediates(normalised, indices=[3], intermediates_only=True)
    torch.testing.assert_close(features(f"{RESNET}@stage2"), inner.mean(dim=(2, 3)))
    # resnet's final features are exactly the pooled last stage
    torch.testing.assert_close(features(f"{RESNET}@stage3"), features(RESNET))


def test_multi_stage_key_concatenates_the_single_stages_in_order():
    multi = get_backbone(f"{RESNET}@stage3+stage1")
    assert multi.spec.key == f"{RESNET}@stage1+3" and multi.layer == "stage1+3"
    assert multi.spec.dim == 128 + 512
    expected = torch.cat([features(f"{RESNET}@stage1"), features(f"{RESNET}@stage3")], dim=1)
    torch.testing.assert_close(features(f"{RESNET}@stage1+3"), expected)


def test_an_inner_layer_differs_from_the_final_features():
    """A ViT's last block vs its final features (same width, but after the norm and class-token pool)."""
    key = "test_vit.random"  # timm's tiny test ViT: 6 blocks of 64
    assert backbone_layers(key) == [(f"stage{i}", 64) for i in range(6)]
    inner, final = features(f"{key}@stage5"), features(key)
    assert inner.shape == final.shape == (2, 64)
    assert not torch.allclose(inner, final, atol=1e-3)
    assert not torch.allclose(inner[0], inner[1])  # depends on the image


@pytest.mark.parametrize("architecture", ["resnet18", "test_convnext"])  # layer1..4, stages
def test_widths_match_timms_feature_info(architecture):
    import timm

    with torch.device("meta"):
        channels = timm.create_model(architecture).feature_info[-4:]
    assert [w for _, w in backbone_layers(f"{architecture}.random")] == [c["num_chs"] for c in channels]


def test_efficientnet_lite0_stage_widths():
    import timm

    key = "tf_efficientnet_lite0.in1k"
    widths = [width for _, width in backbone_layers(key)]
    with torch.device("meta"):
        model = timm.create_model("tf_efficientnet_lite0")
    last_convs = [getattr(stage[-1], "conv_pwl", None) or stage[-1].conv_pw for stage in model.blocks]
    assert widths == [conv.out_channels for conv in last_convs]
    assert widths == [16, 24, 40, 80, 112, 192, 320]
    assert get_backbone(f"{key}@stage5").spec.dim == 192
    assert get_backbone(f"{key}@stage4+5+6").spec.dim == 112 + 192 + 320
    assert features(f"{key}@stage5").shape == (2, 192)


# --- one forward, stopped early ---------------------------------------------------------------------------


def test_the_forward_stops_after_the_deepest_chosen_stage():
    model = get_backbone(f"{RESNET}@stage0+1").build()
    calls: dict[str, int] = {}
    for name in ("layer1", "layer2", "layer3", "layer4", "global_pool"):
        module = getattr(model.net.model, name)  # a pre-hook: counts the modules that start running
        module.register_forward_pre_hook(
            lambda m, i, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    with torch.inference_mode():
        model(pixels(2))
        model(pixels(1))
    assert calls == {"layer1": 2, "layer2": 2}


def test_compiled_channels_last_bf16_forward_keeps_the_early_exit():
    """torch.compile traces the hook's exception into one graph that ends at the deepest chosen stage."""
    graphs = []

    def backend(graph_module, inputs):
        graphs.append(graph_module)
        return graph_module.forward

    model = get_backbone(f"{RESNET}@stage1").build()
    forward = Forward(model, torch.device("cpu"), "bf16", True, False, 2)
    forward.model = torch.compile(forward.model, backend=backend, dynamic=False)
    compiled = forward(pixels(2))
    assert len(graphs) == 1
    assert "layer2" in graphs[0].code and "layer3" not in graphs[0].code and "layer4" not in graphs[0].code
    assert compiled.dtype == torch.float32 and compiled.shape == (2, 128)
    torch.testing.assert_close(compiled, features(f"{RESNET}@stage1"), atol=0.1, rtol=0.05)


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        f"{RESNET}@",
        f"{RESNET}@stage",
        f"{RESNET}@5",
        f"{RESNET}@layer2",
        f"{RESNET}@stage1+",
        f"{RESNET}@stage1+x",
        f"{RESNET}@stage-1",
        f"{RESNET}@stage1@stage2",
        "@stage1",
    ],
)
def test_malformed_layer_keys_are_refused_with_an_example(key):
    with pytest.raises(BackboneError, match=r"malformed layer key .* e\.g\. 'tf_efficientnet_lite2\.in1k@"):
        get_backbone(key)


def test_an_unknown_stage_lists_the_layers_and_their_widths():
    with pytest.raises(BackboneError, match=r"no layer stage4; its layers .*stage0 \(64\).*stage3 \(512\)"):
        get_backbone(f"{RESNET}@stage2+4")


def test_layers_need_a_timm_model():
    with pytest.raises(BackboneError, match="not a timm model"):
        get_backbone("handcrafted.color_texture@stage0")
    with pytest.raises(BackboneError, match="not a timm model"):
        backbone_layers("handcrafted.color_texture")
    spec = BackboneSpec("resnet18.factorytest", "resnet18", 4, 32, (0.5,) * 3, (0.5,) * 3)
    register_backbone(spec, lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)))
    try:
        with pytest.raises(BackboneError, match="not a timm model"):
            get_backbone("resnet18.factorytest@stage1")
    finally:
        unregister_backbone("resnet18.factorytest")


def test_unknown_base_key_is_refused():
    with pytest.raises(BackboneError, match="unknown backbone 'no_such.key'"):
        get_backbone("no_such.key@stage1")


# --- provenance and embed ---------------------------------------------------------------------------------


def test_embed_with_a_layer_key_records_the_layer(tmp_path):
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles", 3, 0)], embedstore.IngestOptions(progress=False))
    key = f"{RESNET}@stage2"
    report = store.embed(key, progress=False, workers=1, batch_size=4)
    assert report.rows_written == 3 and report.table == table_name(key)
    recorded = Provenance.from_metadata(store.catalog.dataset(table_name(key)).schema.metadata)
    assert recorded.layer == "stage2" and recorded.dim == 256 and recorded.backbone == key
    assert recorded.weights_sha256 == get_backbone(RESNET).weights_sha256()
    X, ids, _ = store.embeddings(key).to_numpy()
    assert X.shape == (3, 256) and len(set(ids.tolist())) == 3


def test_provenance_without_a_layer_loads_as_the_final_features():
    provenance = Provenance("a.b", "0" * 64, 3, 8, (0.5,) * 3, (0.5,) * 3, "bicubic", "fp32", "float32")
    assert provenance.layer == ""
    metadata = provenance.to_metadata()
    record = json.loads(metadata[PROVENANCE_KEY])
    del record["layer"]  # as written before layer keys existed
    old = Provenance.from_metadata({**metadata, PROVENANCE_KEY: json.dumps(record).encode()})
    assert old == provenance
    layered = dataclasses.replace(provenance, layer="stage2")
    assert Provenance.from_metadata(layered.to_metadata()).layer == "stage2"
    with pytest.raises(BackboneError, match="layer 'final'.*layer 'stage2'"):
        check_compatible(provenance, layered, "emb__a_b", 0)


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_lists_layers_and_refuses_unknown_keys():
    runner = CliRunner()
    text = runner.invoke(app, ["backbones", "--layers", RESNET])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[:4] == ["stage0  64", "stage1  128", "stage2  256", "stage3  512"]
    assert f"{RESNET}@stage3" in text.output and f"{RESNET}@stage1+2+3" in text.output
    listed = json.loads(runner.invoke(app, ["backbones", "--layers", RESNET, "--json"]).output)
    assert listed == {"key": RESNET, "layers": [{"name": n, "dim": d} for n, d in RESNET_WIDTHS]}
    for key, message in (("no_such.key", "unknown backbone"), ("handcrafted.color_texture", "timm")):
        result = runner.invoke(app, ["backbones", "--layers", key])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1 and message in result.output


def test_every_spelling_of_a_layer_key_names_the_same_table():
    from embedstore.storage.embedding_tables import table_name

    assert table_name("x.y@stage6+stage4") == table_name("x.y@stage4+6") == table_name("x.y@stage4+6+4")
    assert table_name("x.y@stage4") != table_name("x.y@stage4+6")

"""Backbones: the contract every registered backbone meets, real weights, local weights, errors, CLI."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import textwrap
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from embedstore.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    FactoryBackbone,
    efficientnet_lite,
    get_backbone,
    handcrafted,
    list_backbones,
    load_entry_points,
    register_backbone,
    unregister_backbone,
)
from embedstore.core.errors import BackboneError

LITE_KEYS = ("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k")
EXPECTED = {  # key -> (dim, input size)
    "tf_efficientnet_lite0.in1k": (1280, 224),
    "tf_efficientnet_lite1.in1k": (1280, 240),
    "tf_efficientnet_lite2.in1k": (1280, 260),
    "resnet18.random": (512, 224),
    "resnet50.random": (2048, 224),
    "vit_small_patch16_224.random": (384, 224),
    "handcrafted.color_texture": (51, 224),
}
AVAILABLE = [spec.key for spec in list_backbones() if get_backbone(spec.key).available()[0]]


@pytest.fixture(autouse=True)
def hermetic_hf_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty Hugging Face cache of its own, and no network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return home


def pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random uint8 RGB images (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8))


@cache
def outputs(key: str) -> dict[str, torch.Tensor]:
    """Built once per backbone: features of the same batch twice, of one image alone, and channels_last."""
    model = get_backbone(key).build()
    batch = pixels(3, get_backbone(key).spec.input_size)
    with torch.inference_mode():
        return {
            "batch": model(batch),
            "again": model(batch),
            "alone": model(batch[1:2]),
            "float": model(batch.float()),
            "channels_last": model(batch.contiguous(memory_format=torch.channels_last)),
        }


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_holds_the_builtin_backbones():
    specs = {spec.key: spec for spec in list_backbones()}
    for key, (dim, size) in EXPECTED.items():
        assert (specs[key].dim, specs[key].input_size) == (dim, size), key
    for key in LITE_KEYS:
        assert specs[key].mean == specs[key].std == (0.5, 0.5, 0.5)
        assert specs[key].architecture == key.split(".")[0]
    assert specs["resnet50.random"].mean == IMAGENET_MEAN and specs["resnet50.random"].std == IMAGENET_STD
    assert set(LITE_KEYS) <= set(AVAILABLE), "the efficientnet-lite packages are project dependencies"


def test_spec_is_frozen_and_validated():
    spec = list_backbones()[0]
    with pytest.raises(AttributeError):
        spec.dim = 3  # type: ignore[misc]
    with pytest.raises(BackboneError, match="mean must be 3 numbers"):
        spec.replace(mean=(0.5, 0.5))
    with pytest.raises(BackboneError, match="no tag"):
        spec.replace(key="resnet50")
    assert json.loads(json.dumps(spec.to_dict()))["key"] == spec.key


# --- the contract, for every registered backbone usable here ----------------------------------------------


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_shape_and_dtype(key):
    spec = get_backbone(key).spec
    out = outputs(key)["batch"]
    assert out.shape == (3, spec.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_deterministic_in_eval(key):
    out = outputs(key)
    assert torch.equal(out["batch"], out["again"])


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_batch_size_invariant(key):
    out = outputs(key)
    torch.testing.assert_close(out["alone"], out["batch"][1:2], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_uint8_float_and_channels_last_inputs_agree(key):
    out = outputs(key)
    torch.testing.assert_close(out["float"], out["batch"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["channels_last"], out["batch"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_runs_under_bf16_autocast(key):
    backbone = get_backbone(key)
    model = backbone.build().to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels(3, backbone.spec.input_size).contiguous(memory_format=torch.channels_last))
    assert out.shape == (3, backbone.spec.dim) and out.dtype == torch.float32
    similarity = torch.nn.functional.cosine_similarity(out, outputs(key)["batch"])
    assert similarity.min() > 0.98


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_built_module_is_eval_float32_cpu(key):
    model = get_backbone(key).build()
    assert not model.training and all(not m.training for m in model.modules())
    for tensor in [*model.parameters(), *model.buffers()]:
        assert tensor.device.type == "cpu"
        assert tensor.dtype == torch.float32 or not tensor.is_floating_point()


@pytest.mark.parametrize("key", AVAILABLE)
def test_contract_weights_sha256_is_stable(key):
    digest = get_backbone(key).weights_sha256()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert get_backbone(key).weights_sha256() == digest


def test_random_baselines_are_seeded_and_leave_the_global_rng_alone():
    backbone = get_backbone("resnet18.random")
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    first, second = backbone.build().state_dict(), backbone.build().state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_any_timm_architecture_has_a_random_baseline():
    backbone = get_backbone("resnet10t.random")
    assert backbone.spec.dim == 512
    with torch.inference_mode():
        assert backbone.build()(pixels(1, backbone.spec.input_size)).shape == (1, 512)


# --- real weights -----------------------------------------------------------------------------------------


def test_efficientnet_lite0_ranks_espresso_first_for_coffee():
    from skimage import data

    image = Image.fromarray(data.coffee()).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)
    model = get_backbone("tf_efficientnet_lite0.in1k").build(with_classifier=True)
    with torch.inference_mode():
        probabilities = model(x).softmax(dim=1)[0]
    assert probabilities.shape == (1000,)
    assert int(probabilities.argmax()) == 967  # espresso
    assert float(probabilities[967]) > 0.5


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_weights_load_strictly_into_timm(variant):
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    state = efficientnet_lite.timm_state_dict(variant)
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    package_file = efficientnet_lite.checkpoint_path(variant)
    assert get_backbone(f"tf_efficientnet_lite{variant}.in1k").weights_sha256() == sha256_of(package_file)


# --- local weights ----------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source_resnet18():
    """A seeded resnet18 (with its classifier) standing in for a lab's own trained weights."""
    torch.manual_seed(123)
    return timm.create_model("resnet18", pretrained=False).eval()


def expected_features(model: torch.nn.Module, x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """What the backbone should return: the source's pooled pre-logits on normalised pixels."""
    normalised = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.forward_head(model.forward_features(normalised), pre_logits=True)


@pytest.mark.parametrize("layout", ["safetensors", "pth", "nested_pth"])
def test_local_weights_file_round_trip(layout, source_resnet18, tmp_path):
    state = source_resnet18.state_dict()
    if layout == "safetensors":
        path = tmp_path / "mine.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "pth":
        path = tmp_path / "mine.pth"
        torch.save(state, path)
    else:  # a training checkpoint: nested under "state_dict", saved from DistributedDataParallel
        path = tmp_path / "mine.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = get_backbone("resnet18.mine", weights=str(path))
    assert backbone.spec.dim == 512 and backbone.spec.architecture == "resnet18"
    assert backbone.weights_sha256() == sha256_of(path)
    x = pixels(2, backbone.spec.input_size, seed=1)
    with torch.inference_mode():
        got = backbone.build()(x)
        logits = backbone.build(with_classifier=True)(x)
    torch.testing.assert_close(got, expected_features(source_resnet18, x), atol=1e-5, rtol=1e-5)
    assert logits.shape == (2, 1000)


def save_timm_dir(model: torch.nn.Module, directory: Path, architecture: str, mean, std) -> Path:
    """A timm / Hugging Face style model directory: config.json + model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": architecture,
        "num_classes": 1000,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "mean": list(mean),
            "std": list(std),
            "license": "mit",
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors")
    )
    return directory


def test_local_model_directory_uses_its_config(source_resnet18, tmp_path):
    directory = save_timm_dir(source_resnet18, tmp_path / "lab_resnet18", "resnet18", (0.5,) * 3, (0.25,) * 3)
    backbone = get_backbone("resnet18.lab", weights=directory)
    assert backbone.spec.mean == (0.5,) * 3 and backbone.spec.std == (0.25,) * 3
    assert backbone.spec.licence == "mit"
    x = pixels(2, 224, seed=2)
    with torch.inference_mode():
        got = backbone.build()(x)
    torch.testing.assert_close(got, expected_features(source_resnet18, x, (0.5,) * 3, (0.25,) * 3))
    with pytest.raises(BackboneError, match="holds a resnet18, not a resnet50"):
        get_backbone("resnet50.lab", weights=directory)


def fill_hf_cache(hf_home: Path, repo_id: str, model: torch.nn.Module, architecture: str) -> None:
    """Lay out a model in the Hugging Face cache the way huggingface_hub stores a download."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    save_timm_dir(model, repo / "snapshots" / commit, architecture, IMAGENET_MEAN, IMAGENET_STD)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hf_hub_key_loads_from_the_local_cache(source_resnet18, hermetic_hf_cache):
    fill_hf_cache(hermetic_hf_cache, "mylab/resnet18-tiles", source_resnet18, "resnet18")
    backbone = get_backbone("hf-hub:mylab/resnet18-tiles")
    assert backbone.spec.architecture == "resnet18" and backbone.spec.dim == 512
    x = pixels(1, 224, seed=3)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.build()(x), expected_features(source_resnet18, x))


def test_timm_pretrained_tag_loads_from_the_local_cache(source_resnet18, hermetic_hf_cache):
    fill_hf_cache(hermetic_hf_cache, "timm/resnet18.a1_in1k", source_resnet18, "resnet18")
    backbone = get_backbone("resnet18.a1_in1k")
    assert "Hugging Face cache" in backbone.spec.weights_source
    assert backbone.build()(pixels(1, 224)).shape == (1, 512)


# --- errors: one line, naming the problem and the fix ------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unknown_key_lists_close_matches():
    with pytest.raises(BackboneError) as error:
        get_backbone("tf_efficientnet_lite0.in1")
    assert "tf_efficientnet_lite0.in1k" in one_line(error)
    with pytest.raises(BackboneError, match="embedstore backbones"):
        get_backbone("no_such_net.v1")


def test_pretrained_tag_not_on_this_machine_is_refused_without_download():
    with pytest.raises(BackboneError) as error:
        get_backbone("resnet50.a1_in1k")
    message = one_line(error)
    assert "not on this machine" in message and "--weights" in message


def test_hf_hub_key_not_cached_is_refused_without_download():
    with pytest.raises(BackboneError) as error:
        get_backbone("hf-hub:someone/not-cached")
    assert "not in the local Hugging Face cache" in one_line(error)


def test_wrong_shapes_name_the_first_mismatching_key(source_resnet18, tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source_resnet18.state_dict().items()}, str(path))
    with pytest.raises(BackboneError) as error:
        get_backbone("resnet50.mine", weights=path)
    assert "'layer1.0.conv1.weight' has shape" in one_line(error)


def test_missing_and_foreign_keys_are_named(source_resnet18, tmp_path):
    state = source_resnet18.state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(BackboneError, match="lack .* first 'layer4"):
        get_backbone("resnet18.partial", weights=partial)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "projector.weight": torch.zeros(2, 2)}, extra)
    with pytest.raises(BackboneError, match="first 'projector.weight'"):
        get_backbone("resnet18.extra", weights=extra)


def test_missing_or_unreadable_weights_file(tmp_path):
    with pytest.raises(BackboneError) as error:
        get_backbone("resnet18.mine", weights=tmp_path / "nope.safetensors")
    assert "does not exist" in one_line(error)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BackboneError, match="unknown suffix"):
        get_backbone("resnet18.mine", weights=tmp_path / "notes.txt")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read weights file"):
        get_backbone("resnet18.mine", weights=tmp_path / "broken.pth")


def test_weights_for_a_backbone_that_takes_none():
    with pytest.raises(BackboneError, match="takes no weights"):
        get_backbone("handcrafted.color_texture", weights="anything.pth")
    with pytest.raises(BackboneError, match="no classifier"):
        get_backbone("handcrafted.color_texture").build(with_classifier=True)


# --- registering backbones from Python and from plugins --------------------------------------------------


class ChannelMean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def tiny_spec(key: str) -> BackboneSpec:
    return BackboneSpec(
        key=key, architecture="channel_mean", dim=3, input_size=32, mean=(0, 0, 0), std=(1, 1, 1)
    )


def test_register_a_factory_and_a_decorated_function():
    try:
        backbone = register_backbone(tiny_spec("test.channel_mean"), ChannelMean)
        assert get_backbone("test.channel_mean") is backbone
        assert "test.channel_mean" in {spec.key for spec in list_backbones()}
        x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
        torch.testing.assert_close(backbone.build()(x), torch.ones(2, 3))
        with pytest.raises(BackboneError, match="already registered"):
            register_backbone(tiny_spec("test.channel_mean"), ChannelMean)

        @register_backbone(tiny_spec("test.decorated"))
        def build() -> torch.nn.Module:
            return ChannelMean()

        assert get_backbone("test.decorated").build()(x).shape == (2, 3)
    finally:
        unregister_backbone("test.channel_mean")
        unregister_backbone("test.decorated")


def test_register_a_spec_with_a_local_weights_file(source_resnet18, tmp_path):
    path = tmp_path / "lab.safetensors"
    save_file({k: v.contiguous() for k, v in source_resnet18.state_dict().items()}, str(path))
    spec = BackboneSpec(
        key="lab.resnet18",
        architecture="resnet18",
        dim=512,
        input_size=224,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        mpp=0.5,
    )
    try:
        backbone = register_backbone(spec, weights=path)
        assert get_backbone("lab.resnet18").spec == spec.replace(weights_source=backbone.spec.weights_source)
        x = pixels(1, 224, seed=4)
        with torch.inference_mode():
            got = backbone.build()(x)
        torch.testing.assert_close(got, expected_features(source_resnet18, x, (0.5,) * 3, (0.5,) * 3))
    finally:
        unregister_backbone("lab.resnet18")


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    module = "embedstore_test_plugin_mod"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            import torch
            from embedstore.backbones import BackboneSpec, FactoryBackbone

            class Mean(torch.nn.Module):
                def forward(self, x):
                    return x.mean(dim=(2, 3))

            def backbones():
                spec = BackboneSpec(key="plugin.mean", architecture="mean", dim=3, input_size=32,
                                    mean=(0, 0, 0), std=(1, 1, 1))
                return [FactoryBackbone(spec, Mean)]
            """
        )
    )
    info = tmp_path / "embedstore_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: embedstore-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[embedstore.backbones]\nmean = {module}:backbones\nbroken = {module}:no_such_function\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.warns(UserWarning, match="plugin 'broken'"):
            added = load_entry_points()
        assert added == ["plugin.mean"]
        assert isinstance(get_backbone("plugin.mean"), FactoryBackbone)
        assert get_backbone("plugin.mean").build()(pixels(1, 32)).shape == (1, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_entry_points() == []  # each plugin is loaded once
    finally:
        unregister_backbone("plugin.mean")
        sys.modules.pop(module, None)


# --- the hand-crafted baseline ----------------------------------------------------------------------------


def test_handcrafted_hed_matches_skimage():
    from skimage import color, data

    image = data.immunohistochemistry()[:128, :128]
    ours = handcrafted.rgb_to_hed(torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255)
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), color.rgb2hed(image), atol=1e-5)


def test_handcrafted_features_are_named_and_respond_to_stain_and_texture():
    assert (
        len(handcrafted.FEATURE_NAMES)
        == handcrafted.DIM
        == get_backbone("handcrafted.color_texture").spec.dim
    )
    model = get_backbone("handcrafted.color_texture").build()
    names = list(handcrafted.FEATURE_NAMES)
    purple = torch.tensor([120, 60, 160], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    pink = torch.tensor([230, 150, 190], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    stripes = purple.clone()
    stripes[..., ::8, :] = 255
    with torch.inference_mode():
        f_purple, f_pink, f_stripes = model(torch.cat([purple, pink, stripes]))
    hae = names.index("haematoxylin_mean")
    assert f_purple[hae] > f_pink[hae]
    assert f_purple[names.index("sobel_mean")] < 1e-6 < f_stripes[names.index("sobel_mean")]


# --- the CLI ----------------------------------------------------------------------------------------------


def test_cli_lists_backbones_as_json_and_as_a_table():
    from cli.main import app

    result = CliRunner().invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in json.loads(result.output)}
    for key in LITE_KEYS:
        assert rows[key]["dim"] == 1280 and rows[key]["available"] is True
    table = CliRunner().invoke(app, ["backbones"])
    assert table.exit_code == 0 and all(key in table.output for key in EXPECTED)

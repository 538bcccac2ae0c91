"""Pathology presets: architectures, checkpoint layouts, offline loading from a fake HF cache, provenance,
layers, preprocessing against the model cards, and one-line errors. Big ViTs run at reduced depth."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.backbones import backbone_layers, get_backbone, register_backbone, unregister_backbone
from embedstore.backbones.presets import PRESETS, PRESETS_BY_NAME, Preset, PresetBackbone, checkpoint_shapes
from embedstore.backbones.presets.builders import PresetNet, build_trunk, trunk_state
from embedstore.core.errors import BackboneError
from embedstore.storage.embedding_tables import Provenance, table_name
from tests.helpers import write_tiles

TIMM_BUILT = [p.name for p in PRESETS if p.layout is not None]
PACKAGE_BUILT = [p.name for p in PRESETS if p.layout is None]

# What each model card (or the authors' reference loader) states: input size, crop, mean, std, dim, pooling.
CARD = {
    "uni": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1024, "cls",
            "https://huggingface.co/MahmoodLab/UNI"),
    "uni2-h": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1536, "cls",
               "https://huggingface.co/MahmoodLab/UNI2-h"),
    "virchow": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 2560, "cls+mean",
                "https://huggingface.co/paige-ai/Virchow"),
    "virchow2": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 2560, "cls+mean",
                 "https://huggingface.co/paige-ai/Virchow2"),
    "h-optimus-0": (224, 224, (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517), 1536, "cls",
                    "https://huggingface.co/bioptimus/H-optimus-0"),
    "h-optimus-1": (224, 224, (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517), 1536, "cls",
                    "https://huggingface.co/bioptimus/H-optimus-1"),
    "h0-mini": (224, 224, (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517), 1536, "cls+mean",
                "https://huggingface.co/bioptimus/H0-mini"),
    "prov-gigapath": (256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1536, "cls",
                      "https://huggingface.co/prov-gigapath/prov-gigapath"),
    "kaiko-vits16": (224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 384, "cls",
                     "https://github.com/kaiko-ai/towards_large_pathology_fms"),
    "kaiko-vits8": (224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 384, "cls",
                    "https://github.com/kaiko-ai/towards_large_pathology_fms"),
    "kaiko-vitb16": (224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 768, "cls",
                     "https://github.com/kaiko-ai/towards_large_pathology_fms"),
    "kaiko-vitb8": (224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 768, "cls",
                    "https://github.com/kaiko-ai/towards_large_pathology_fms"),
    "kaiko-vitl14": (224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1024, "cls",
                     "https://github.com/kaiko-ai/towards_large_pathology_fms"),
    "lunit-vits8": (224, 224, (0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464), 384,
                    "cls", "https://github.com/lunit-io/benchmark-ssl-pathology"),
    "gpfm": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1024, "cls",
             "https://huggingface.co/majiabo/GPFM"),
    "phikon": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 768, "cls",
               "https://huggingface.co/owkin/phikon"),
    "phikon-v2": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1024, "cls",
                  "https://huggingface.co/owkin/phikon-v2"),
    "resnet50-trunc": (224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1024, "avg",
                       "https://github.com/mahmoodlab/CLAM"),
    "conch-v1": (448, 448, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), 512,
                 "projection", "https://huggingface.co/MahmoodLab/CONCH"),
    "musk": (384, 384, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1024, "cls", "https://huggingface.co/xiangjx/musk"),
}  # fmt: skip


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """Every test starts with an empty HF cache of its own and no weights named in the environment."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "EMBEDSTORE_WEIGHTS_DIR", "EMBEDSTORE_HF_REVISION"):
        monkeypatch.delenv(name, raising=False)
    for preset in PRESETS:
        monkeypatch.delenv(preset.env_var, raising=False)
    return tmp_path / "hf" / "hub"


def shallow(name: str, depth: int = 2) -> Preset:
    """The preset with fewer blocks: every other constructor argument unchanged."""
    preset = PRESETS_BY_NAME[name]
    if preset.family == "timm-resnet-trunc":
        return dataclasses.replace(preset, name=f"{name}-test")
    assert preset.layout is not None and not isinstance(preset.layout, type(None))
    layout = dataclasses.replace(preset.layout, depth=depth)  # type: ignore[type-var]
    return dataclasses.replace(preset, name=f"{name}-d{depth}-test", kwargs={**preset.kwargs, "depth": depth},
                               layout=layout)  # fmt: skip


def random_checkpoint(preset: Preset, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of the preset's published checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(shape, generator=generator) * 0.05 for k, shape in checkpoint_shapes(preset).items()
    }
    return {k: v.abs() + 1 if k.endswith("running_var") else v for k, v in state.items()}


@functools.cache
def quick_net(name: str) -> PresetNet:
    """The one-block preset with cheap random values, built once per test session."""
    preset = shallow(name, depth=1)
    return PresetNet(preset, quick_build(preset))


def quick_build(preset: Preset) -> torch.nn.Module:
    """The preset's network with cheap random values (normal, not timm's slow truncated-normal init)."""
    with torch.device("meta"):
        model = build_trunk(preset, init=False)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("running_var"):
                tensor.fill_(1)
            elif tensor.is_floating_point():
                tensor.normal_(0, 0.05, generator=generator)
            else:
                tensor.zero_()
    return model.eval()


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def put_in_hf_cache(hub: Path, repo: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """The real hub layout: blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    staging = save(state, repo_dir / "staging" / filename)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    blob = repo_dir / "blobs" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(blob)
    commit = hashlib.sha1(repo.encode()).hexdigest()
    link = repo_dir / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return link


def pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8))


def normalised(x: torch.Tensor, preset: Preset) -> torch.Tensor:
    mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
    std = torch.tensor(preset.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


# --- the catalogue ----------------------------------------------------------------------------------------


def test_at_least_twenty_presets_are_registered_with_their_facts():
    keys = {spec.key for spec in embedstore.backbones.list_backbones()}
    assert len(PRESETS) >= 20 and {p.name for p in PRESETS} <= keys
    for preset in PRESETS:
        assert preset.licence and preset.repo and preset.weight_files and preset.sources, preset.name
        assert preset.precision in ("fp32", "fp16", "bf16") and preset.crop <= preset.input_size


@pytest.mark.parametrize("name", sorted(CARD))
def test_preprocessing_matches_the_model_card(name):
    size, crop, mean, std, dim, pooling, _source = CARD[name]
    preset = PRESETS_BY_NAME[name]
    assert (preset.input_size, preset.crop, preset.dim, preset.pooling) == (size, crop, dim, pooling)
    assert preset.mean == pytest.approx(mean, abs=1e-9) and preset.std == pytest.approx(std, abs=1e-9)
    spec = get_backbone(name).spec
    assert (spec.mean, spec.std, spec.input_size, spec.dim) == (preset.mean, preset.std, size, dim)


def test_every_preset_has_a_card_entry():
    assert set(CARD) == {p.name for p in PRESETS}


# --- architectures and checkpoint layouts -------------------------------------------------------------------


@pytest.mark.parametrize("name", TIMM_BUILT)
def test_published_checkpoint_layout_fits_the_full_architecture_exactly(name):
    """Every tensor name and shape of the real checkpoint (renamed where transformers-named) is the
    network's, none missing, none extra: a real checkpoint loads with strict=True."""
    preset = PRESETS_BY_NAME[name]
    with torch.device("meta"):
        model = build_trunk(preset, init=False)
    fake = {k: torch.empty(s, device="meta") for k, s in checkpoint_shapes(preset).items()}
    renamed = {k: tuple(v.shape) for k, v in trunk_state(preset, fake, "layout").items()}
    wanted = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert renamed == wanted


@pytest.mark.parametrize("name", TIMM_BUILT)
def test_preset_builds_and_gives_vectors_of_its_dim_from_its_input_size(name):
    preset, net = PRESETS_BY_NAME[name], quick_net(name)
    with torch.inference_mode():
        out = net(normalised(pixels(1, preset.input_size), preset))
    assert out.shape == (1, preset.dim) and torch.isfinite(out).all()


def test_virchow2_pools_the_class_token_and_the_patch_tokens_without_registers():
    preset, net = PRESETS_BY_NAME["virchow2"], quick_net("virchow2")
    x = normalised(pixels(1, 224), preset)
    with torch.inference_mode():
        tokens = net.model.forward_features(x)
        out = net(x)
    assert tokens.shape[1] == 1 + 4 + 256  # class token, 4 registers, 16 x 16 patches
    assert torch.allclose(out[:, :1280], tokens[:, 0]) and torch.allclose(
        out[:, 1280:], tokens[:, 5:].mean(1)
    )


def test_gigapath_takes_the_centre_224_of_its_256_input():
    preset, net = PRESETS_BY_NAME["prov-gigapath"], quick_net("prov-gigapath")
    x = normalised(pixels(1, 256), preset)
    with torch.inference_mode():
        assert torch.allclose(net(x), net.model.forward_features(x[..., 16:240, 16:240])[:, 0])


# --- loading offline: a fake Hugging Face cache -------------------------------------------------------------


def registered(preset: Preset) -> PresetBackbone:
    backbone = PresetBackbone(preset)
    register_backbone(backbone, overwrite=True)
    return backbone


def test_timm_preset_loads_from_the_hf_cache_and_matches_a_direct_load(empty_hf_cache):
    preset = shallow("kaiko-vits16")
    state = random_checkpoint(preset)
    put_in_hf_cache(empty_hf_cache, preset.repo, "model.safetensors", state)
    backbone = registered(preset)
    try:
        assert backbone.available() == (True, "")
        assert "Hugging Face cache" in backbone.spec.weights_source
        found = get_backbone(preset.name)
        x = pixels(2, 224)
        with torch.inference_mode():
            vectors = found.build()(x)
            import timm

            direct = timm.create_model(preset.architecture, num_classes=0, depth=2, dynamic_img_size=True)
            direct.load_state_dict(state, strict=True)
            expected = direct.eval()(normalised(x, preset))
        assert torch.allclose(vectors, expected, atol=1e-5)
    finally:
        unregister_backbone(preset.name)


def _hf_reference(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int, eps: float, dinov2: bool):
    """A from-scratch transformers ViT / Dinov2 forward over the checkpoint's own names (class token out)."""
    ln = torch.nn.functional.layer_norm
    w = state
    proj = "embeddings.patch_embeddings.projection"
    patch = w[f"{proj}.weight"].shape[-1]
    patches = torch.nn.functional.conv2d(x, w[f"{proj}.weight"], w[f"{proj}.bias"], stride=patch)
    patches = patches.flatten(2).transpose(1, 2)
    h = torch.cat([w["embeddings.cls_token"].expand(len(x), -1, -1), patches], 1)
    h = h + w["embeddings.position_embeddings"]
    dim = h.shape[-1]
    layers = sorted({int(k.split(".")[2]) for k in w if k.startswith("encoder.layer.")})
    for i in layers:
        p = f"encoder.layer.{i}."
        n1, n2 = ("norm1", "norm2") if dinov2 else ("layernorm_before", "layernorm_after")
        a = ln(h, (dim,), w[p + n1 + ".weight"], w[p + n1 + ".bias"], eps)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(len(x), -1, heads, dim // heads).transpose(1, 2)

        qkv = [f"{p}attention.attention.{n}" for n in ("query", "key", "value")]
        q, k, v = (split(a @ w[f"{n}.weight"].T + w[f"{n}.bias"]) for n in qkv)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), -1) @ v
        att = att.transpose(1, 2).reshape(len(x), -1, dim)
        att = att @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        h = h + (att * w[p + "layer_scale1.lambda1"] if dinov2 else att)
        m = ln(h, (dim,), w[p + n2 + ".weight"], w[p + n2 + ".bias"], eps)
        fc1, fc2 = ("mlp.fc1", "mlp.fc2") if dinov2 else ("intermediate.dense", "output.dense")
        m = torch.nn.functional.gelu(m @ w[p + fc1 + ".weight"].T + w[p + fc1 + ".bias"])
        m = m @ w[p + fc2 + ".weight"].T + w[p + fc2 + ".bias"]
        h = h + (m * w[p + "layer_scale2.lambda1"] if dinov2 else m)
    return ln(h, (dim,), w["layernorm.weight"], w["layernorm.bias"], eps)[:, 0]


@pytest.mark.parametrize(
    ("name", "filename", "heads", "eps", "dinov2"),
    [("phikon", "pytorch_model.bin", 12, 1e-12, False), ("phikon-v2", "model.safetensors", 16, 1e-6, True)],
)
def test_transformers_checkpoint_from_the_hf_cache_matches_a_transformers_forward(
    empty_hf_cache, name, filename, heads, eps, dinov2
):
    """Phikon's ViTModel and Phikon-v2's Dinov2Model weights, renamed to timm, give the vectors a
    from-scratch forward of the transformers architecture gives from the original names."""
    preset = shallow(name, depth=1)
    state = random_checkpoint(preset, seed=1)
    if not dinov2:
        state["pooler.dense.weight"] = torch.zeros(768, 768)  # present in some ViTModel files: dropped
    put_in_hf_cache(empty_hf_cache, preset.repo, filename, state)
    backbone = registered(preset)
    try:
        x = pixels(2, 224, seed=3)
        with torch.inference_mode():
            vectors = get_backbone(preset.name).build()(x)
            expected = _hf_reference(state, normalised(x, preset), heads, eps, dinov2)
        assert torch.allclose(vectors, expected, atol=1e-4), (vectors - expected).abs().max()
    finally:
        unregister_backbone(backbone.spec.key)


def test_weights_from_a_folder_and_from_an_environment_variable(tmp_path, monkeypatch):
    preset = shallow("lunit-vits8")
    file = save(random_checkpoint(preset), tmp_path / "lunit" / "model.safetensors")
    by_folder = PresetBackbone(preset, tmp_path / "lunit")
    assert by_folder.available() == (True, "") and by_folder.weights_file() == file
    monkeypatch.setenv(preset.env_var, str(file))
    by_env = PresetBackbone(preset)
    assert by_env.weights_file() == file and preset.env_var in by_env.spec.weights_source
    assert by_env.weights_sha256() == hashlib.sha256(file.read_bytes()).hexdigest()


# --- provenance, layers, probe ----------------------------------------------------------------------------


@pytest.fixture
def small_preset(empty_hf_cache):
    preset = shallow("kaiko-vits16")
    put_in_hf_cache(empty_hf_cache, preset.repo, "model.safetensors", random_checkpoint(preset))
    backbone = registered(preset)
    yield backbone
    unregister_backbone(backbone.spec.key)


def test_embed_records_the_preset_weights_and_preprocessing_then_probe_and_layers_work(
    small_preset, tmp_path
):
    key = small_preset.spec.key
    store = embedstore.init(tmp_path / "store")
    options = embedstore.IngestOptions(progress=False, task="cls")
    store.ingest([write_tiles(tmp_path / "tiles", 8, 0)], options)
    for backbone in (key, f"{key}@stage0"):
        assert store.embed(backbone, progress=False, workers=1, batch_size=4).rows_written == 8
    recorded = Provenance.from_metadata(store.catalog.dataset(table_name(key)).schema.metadata)
    assert recorded.preset == f"{key} v1" and recorded.pooling == "cls" and recorded.dim == 384
    assert recorded.weights_sha256 == small_preset.weights_sha256()
    assert (recorded.mean, recorded.std, recorded.input_size) == ((0.5,) * 3, (0.5,) * 3, 224)
    layered = Provenance.from_metadata(store.catalog.dataset(table_name(f"{key}@stage0")).schema.metadata)
    assert layered.layer == "stage0" and layered.dim == 384
    assert backbone_layers(key) == [("stage0", 384), ("stage1", 384)]
    both = f"{key},{key}@stage0"
    report = store.probe("cls", both, probes=("knn",), knn_k=(1,), rank_k=1, folds=2, seeds=1, shots=None)
    assert set(report.summary["backbone"].to_list()) == {key, f"{key}@stage0"}


def test_layer_key_of_a_preset_pools_its_blocks(small_preset):
    key = small_preset.spec.key
    layer = get_backbone(f"{key}@stage1")
    x = pixels(1, 224)
    with torch.inference_mode():
        trunk = small_preset.trunk()
        tokens = trunk.blocks(trunk._pos_embed(trunk.patch_embed(normalised(x, small_preset.preset))))
        assert torch.allclose(layer.build()(x), tokens[:, 1:].mean(1), atol=1e-5)


# --- bad input ----------------------------------------------------------------------------------------------


def test_unknown_preset_suggests_near_names():
    with pytest.raises(BackboneError, match="uni2-h"):
        get_backbone("uni2h")


def test_missing_weights_say_what_to_fetch_and_that_the_repo_is_gated():
    with pytest.raises(BackboneError) as error:
        get_backbone("uni2-h").build()
    text = str(error.value)
    assert "\n" not in text and "pytorch_model.bin" in text and "MahmoodLab/UNI2-h" in text
    assert "huggingface-cli download MahmoodLab/UNI2-h pytorch_model.bin" in text and "gated" in text


def test_weights_of_another_model_name_the_tensor_that_does_not_fit(tmp_path):
    lunit = shallow("lunit-vits8")  # patch 8: the same names as kaiko ViT-S/16, another patch size
    file = save(random_checkpoint(lunit), tmp_path / "lunit.safetensors")
    with pytest.raises(
        BackboneError, match=r"'pos_embed' has shape \(1, 785, 384\) in the file but \(1, 197"
    ):
        PresetBackbone(shallow("kaiko-vits16"), file).build()
    phikon = save(random_checkpoint(shallow("phikon")), tmp_path / "phikon.bin")
    with pytest.raises(BackboneError, match="lack .* first 'cls_token'"):
        PresetBackbone(shallow("kaiko-vitb16"), phikon).build()  # transformers names where timm's are due


def test_a_bad_weights_path_is_one_line(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        get_backbone("uni", tmp_path / "nothing.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="holds none of pytorch_model.bin"):
        get_backbone("uni", tmp_path / "empty")


@pytest.mark.parametrize("name", PACKAGE_BUILT)
def test_a_missing_package_names_the_extra(name):
    import importlib.util

    preset = PRESETS_BY_NAME[name]
    if importlib.util.find_spec(preset.extra) is not None:
        pytest.skip(f"the {preset.extra} package is installed here")
    ok, why = get_backbone(name).available()
    assert not ok and f"pip install 'embedstore[{preset.extra}]'" in why
    with pytest.raises(BackboneError, match=rf"embedstore\[{preset.extra}\]"):
        get_backbone(name).build()


def test_cli_lists_presets_and_refuses_bad_ones_with_exit_2(tmp_path):
    runner = CliRunner()
    rows = {row["key"]: row for row in json.loads(runner.invoke(app, ["backbones", "--json"]).output)}
    uni2 = rows["uni2-h"]
    assert uni2["licence"] == "cc-by-nc-nd-4.0" and uni2["gated"] is True and uni2["weights_found"] is False
    assert uni2["dim"] == 1536 and uni2["input_size"] == 224 and uni2["preset"] == "uni2-h v1"
    table = runner.invoke(app, ["backbones"]).output
    assert "huggingface-cli download MahmoodLab/UNI2-h pytorch_model.bin" in table
    store = tmp_path / "store"
    embedstore.init(store).ingest(
        [write_tiles(tmp_path / "tiles", 2, 0)], embedstore.IngestOptions(progress=False)
    )
    for key, words in (
        ("uni2h", "uni2-h"),
        ("uni2-h", "huggingface-cli download"),
        ("musk", "embedstore[musk]"),
    ):
        result = runner.invoke(app, ["embed", str(store), "--backbone", key])
        assert result.exit_code == 2, result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1, result.output

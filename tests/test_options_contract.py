"""Every field of every options class is validated once, with one message format, and builds the CLI."""

from __future__ import annotations

import dataclasses

import click
import pytest

from cli.commands.embed import command as embed_command
from cli.commands.heatmap import command as heatmap_command
from cli.commands.index import command as index_command
from cli.commands.ingest import command as ingest_command
from cli.commands.labels import import_command as labels_import_command
from cli.commands.predict import command as predict_command
from cli.commands.preview import command as preview_command
from cli.commands.probe import command as probe_command
from cli.commands.search import command as search_command
from cli.commands.tiles import command as tiles_command
from cli.commands.train_head import command as train_head_command
from embedstore.core.errors import EmbedstoreError
from embedstore.core.validation import Integers, flag_of
from embedstore.embed.options import EmbedOptions
from embedstore.ingest.options import IngestOptions
from embedstore.maintenance.label_options import LabelImportOptions
from embedstore.maintenance.tile_listing import TileListOptions
from embedstore.probe.options import ProbeOptions
from embedstore.search.options import IndexOptions, SearchOptions
from embedstore.sources.grid import GridSettings
from heads.options import HeadOptions, HeatmapOptions, PredictOptions, TrainOptions

OPTIONS_CLASSES = [
    GridSettings,
    IngestOptions,
    LabelImportOptions,
    TileListOptions,
    EmbedOptions,
    IndexOptions,
    SearchOptions,
    ProbeOptions,
    HeadOptions,
    TrainOptions,
    PredictOptions,
    HeatmapOptions,
]
HAND_MADE = {"groups"}  # --group KEY=COLUMN (repeatable), parsed by the ingest command
FIELDS = [(cls, field) for cls in OPTIONS_CLASSES for field in dataclasses.fields(cls)]


def test_every_field_declares_a_constraint():
    bare = [
        f"{cls.__name__}.{field.name}" for cls, field in FIELDS if field.metadata.get("constraint") is None
    ]
    assert not bare


@pytest.mark.parametrize(("cls", "field"), FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in FIELDS])
def test_an_invalid_value_for_any_field_is_a_one_line_error_naming_the_flag(cls, field):
    bad = field.metadata["constraint"].invalid_example()
    with pytest.raises(EmbedstoreError) as caught:
        cls(**{field.name: bad})
    message = str(caught.value)
    assert message.startswith(flag_of(field) + " ") and " must be " in message and "\n" not in message


@pytest.mark.parametrize("name", ["task", "dataset"])
def test_empty_and_blank_names_are_refused(name):
    for bad in ("", "  ", " padded"):
        with pytest.raises(EmbedstoreError, match=f"--{name} .* must be a non-empty name"):
            IngestOptions(**{name: bad})


def test_relations_between_fields_use_the_same_format():
    with pytest.raises(EmbedstoreError, match=r"^--overlap 224 must be smaller than --tile-size 224$"):
        IngestOptions(overlap=224)
    with pytest.raises(EmbedstoreError, match="^--augment '' must be at least one operation"):
        EmbedOptions(views=2, augment="")


def test_valid_values_are_normalised():
    options = EmbedOptions(augment="flip, blur", weights="~/w.pth")
    assert options.augment == ("flip", "blur") and options.weights.name == "w.pth"
    assert IngestOptions(images_dir="x").images_dir.name == "x"


@pytest.mark.parametrize(
    ("command", "cls"),
    [
        (ingest_command, IngestOptions),
        (labels_import_command, LabelImportOptions),
        (tiles_command, TileListOptions),
        (embed_command, EmbedOptions),
        (preview_command, GridSettings),
        (index_command, IndexOptions),
        (search_command, SearchOptions),
        (probe_command, ProbeOptions),
        (train_head_command, HeadOptions),
        (train_head_command, TrainOptions),
        (predict_command, PredictOptions),
        (heatmap_command, HeatmapOptions),
    ],
)
def test_the_cli_takes_defaults_choices_and_help_from_the_options(command, cls):
    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    defaults = cls()
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            assert field.name not in params or field.name in HAND_MADE
            continue
        param = params[field.name]
        expected = getattr(defaults, field.name)
        if isinstance(expected, tuple):
            expected = ",".join(str(v) for v in expected)
        if expected is None and isinstance(field.metadata["constraint"], Integers):
            expected = "none"  # a list option whose default is none says so (probe --shots)
        assert param.default == expected, field.name
        assert param.help and field.metadata["help"] in param.help or param.help.startswith("Do not"), (
            field.name
        )
        constraint = field.metadata["constraint"]
        if hasattr(constraint, "choices") and isinstance(param.type, click.Choice):
            assert tuple(param.type.choices) == constraint.choices


def test_verbs_check_options_changed_after_they_were_built_and_apply_overrides(tmp_path):
    import embedstore

    store = embedstore.init(tmp_path / "s")
    options = IngestOptions(progress=False)
    options.tile_size = 2  # changed after validation: the verb checks again
    with pytest.raises(EmbedstoreError, match="--tile-size 2 must be an integer >= 8"):
        store.ingest([tmp_path], options)
    with pytest.raises(EmbedstoreError, match="--task '' must be a non-empty name"):
        store.ingest([tmp_path], IngestOptions(progress=False), task="")

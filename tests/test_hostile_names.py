"""Names are names, never paths: every option whose value becomes a file, folder, table or tag name (index,
head, task, tag, table) refuses hostile names with one line and exit code 2, and nothing on disk changes,
inside the store or outside it. The cleanups of indexes and heads never remove anything outside their own
folder, nor files they did not write."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import embedstore
import heads
from embedstore.core.errors import EmbedstoreError
from embedstore.core.location import remove_inside
from embedstore.core.validation import FileName
from embedstore.search.indexes import _remove_unreferenced
from heads.errors import HeadsError
from heads.training import default_name
from heads.tuning import trial_head_name
from tests.cli.test_cli import assert_clean_error, run
from tests.heads.test_train import KEY, SLIDES, separable
from tests.helpers import add_task, vector_store, write_tiles

N = 60
FAST = {"epochs": 2, "batch_size": 32}
FAST_CLI = ("--epochs", 2, "--batch-size", 32, "--no-progress")
ABSOLUTE = "<absolute>"  # stands for an absolute path to a scratch folder outside the store, holding a file
HOSTILE = {  # test id -> name
    "up-two": "../..",
    "up-one": "..",
    "dot": ".",
    "absolute": ABSOLUTE,
    "elsewhere": "../../../elsewhere",
    "slash": "a/b",
    "backslash": "a\\b",
    "newline": "line\nbreak",
    "empty": "",
    "300-chars": "x" * 300,
    "space-umlaut": "my tag ü",
    "dash-rf": "-rf",
}

# Each command with NAME where the hostile name goes, and what the one-line error must say (the flag, or for
# --restore, which reads a tag or a version number, that there is no such tag; commands that only read a
# task take any one-line name, so that tasks of older stores stay readable, and refuse one the store does
# not hold: "task"). {store}, {tmp}: per test.
COMMANDS = {
    "index --name": (("index", "{store}", "--backbone", KEY, "--kind", "flat", "--name=NAME"), "--name"),
    "train-head --name": (
        ("train-head", "{store}", "--backbone", KEY, "--task", "tumour", "--name=NAME", *FAST_CLI),
        "--name",
    ),
    "train-head --task": (
        ("train-head", "{store}", "--backbone", KEY, "--task=NAME", "--name", "new", *FAST_CLI),
        "task",
    ),
    "predict --head": (("predict", "{store}", "--head=NAME", "--no-progress"), "--head"),
    "heatmap --head": (
        ("heatmap", "{store}", "--head=NAME", "--slide", "slide0", "--out", "{tmp}/map.png"),
        "--head",
    ),
    "versions --tag": (("versions", "{store}", "--table", "tiles", "--tag=NAME"), "--tag"),
    "versions --restore": (("versions", "{store}", "--table", "tiles", "--restore=NAME"), "has no tag"),
    "versions --table": (("versions", "{store}", "--table=NAME", "--tag", "keep"), "--table"),
    "labels import --task": (("labels", "import", "{store}", "{tmp}/labels.csv", "--task=NAME"), "--task"),
    "ingest --task": (("ingest", "{store}", "{tmp}/tiles", "--task=NAME"), "--task"),
    "probe --task": (("probe", "{store}", "--task=NAME", "--no-progress"), "task"),
    "search --index": (
        ("search", "{store}", "--backbone", KEY, "--tile", "t000001", "--index=NAME"),
        "--index",
    ),
    "search --exclude-task": (
        ("search", "{store}", "--backbone", KEY, "--tile", "t000001", "--exclude-task=NAME"),
        "task",
    ),
    "search --review-task": (
        (
            "search",
            "{store}",
            "--backbone",
            KEY,
            "--tile",
            "t000001",
            "--review-task=NAME",
            "--html",
            "{tmp}/r.html",
        ),
        "--review-task",
    ),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A small store with everything a name can hit: a labelled task, an index, a head with predictions,
    a tagged version. Each test works on a copy."""
    path = tmp_path_factory.mktemp("hostile_template") / "store"
    vectors, codes = separable(N)
    store = vector_store(path, vectors, slides=SLIDES, key=KEY)
    add_task(store, "tumour", {f"t{i:06d}": "tumour" if c else "normal" for i, c in enumerate(codes)})
    store.index(KEY, kind="flat", name="main")
    heads.train(store, KEY, "tumour", name="h", **FAST)
    heads.predict(store, "h")
    store.tag("tiles", "keep")
    return path


@pytest.fixture
def scratch(tmp_path, template) -> dict[str, Path]:
    """tmp/store (a copy of the template), tmp/elsewhere and tmp/absolute (folders outside the store, each
    with a file a hostile name could reach), a labels CSV and an image folder for the write commands."""
    shutil.copytree(template, tmp_path / "store")
    for folder in ("elsewhere", "absolute"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "keep.txt").write_text("not the store's\n")
    (tmp_path / "labels.csv").write_text("tile_id,label\nt000000,x\n")
    write_tiles(tmp_path / "tiles", 2, seed=1)
    return {"tmp": tmp_path, "store": tmp_path / "store", "absolute": tmp_path / "absolute"}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: relative path -> (size, mtime in ns)."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size if path.is_file() else -1,
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
    }


def concrete(name: str, scratch: dict[str, Path]) -> str:
    return str(scratch["absolute"]) if name == ABSOLUTE else name


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_hostile_name_is_refused_in_one_line_and_nothing_anywhere_changes(scratch, command, name):
    args, says = COMMANDS[command]
    value = concrete(name, scratch)
    filled = [str(a).format(store=scratch["store"], tmp=scratch["tmp"]).replace("NAME", value) for a in args]
    before = snapshot(scratch["tmp"])
    result = run(*filled)
    assert_clean_error(result, says)
    assert snapshot(scratch["tmp"]) == before


def test_the_refusal_names_the_rule(scratch):
    result = run("index", scratch["store"], "--backbone", KEY, "--name", "../..")
    assert_clean_error(
        result,
        "--name '../..' must be a non-empty name of at most 100 letters, digits, '.', '_' or '-', starting "
        "with a letter or digit, without '..'",
    )


def test_index_name_of_a_store_relative_path_no_longer_deletes_the_store(scratch):
    """The issue's reproduction: `index --name ../..` removed embedstore.json and every table."""
    store = scratch["store"]
    before = snapshot(store)
    assert_clean_error(run("index", store, "--backbone", KEY, "--name", "../.."), "--name '../..'")
    assert snapshot(store) == before
    assert embedstore.open(store).catalog.count("tiles") == N


# -- the Python API refuses too ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../..", "/tmp", "a/b", "", "x" * 101, "-rf", ".hidden"])
def test_the_python_api_refuses_hostile_names_before_writing(scratch, name):
    store = embedstore.open(scratch["store"])
    before = snapshot(scratch["tmp"])
    with pytest.raises(EmbedstoreError, match="must be a non-empty name"):
        store.index(KEY, kind="flat", name=name)
    with pytest.raises(EmbedstoreError, match="--tag .* must be a non-empty name"):
        store.tag("tiles", name)
    with pytest.raises(EmbedstoreError, match="--task .* must be a non-empty name"):
        store.import_labels(name, scratch["tmp"] / "labels.csv")
    with pytest.raises(EmbedstoreError, match="--table .* must be a non-empty name|^no table 'x+' in"):
        store.catalog.dataset(name)
    with pytest.raises(HeadsError, match="--name .* must be a non-empty name"):
        heads.train(store, KEY, "tumour", name=name, **FAST)
    with pytest.raises(HeadsError, match="--head .* must be a non-empty name"):
        heads.predict(store, name)
    assert snapshot(scratch["tmp"]) == before


def test_restoring_a_table_outside_the_store_is_refused(scratch):
    """--table is a name too: `../x` would have restored (written) a Lance table beside the store."""
    outside = embedstore.init(scratch["tmp"] / "other")
    before = snapshot(scratch["tmp"])
    result = run("versions", scratch["store"], "--table", "../other/tiles", "--restore", "1")
    assert_clean_error(result, "--table '../other/tiles' must be")
    assert snapshot(scratch["tmp"]) == before
    assert outside.versions("tiles")[-1]["version"] == 1


def test_a_folder_put_in_the_store_by_hand_under_a_name_no_table_can_have_is_not_a_table(scratch):
    (scratch["store"] / "my copy.lance").mkdir()
    store = embedstore.open(scratch["store"])
    assert "my copy" not in store.catalog.table_names() and "tiles" in store.catalog.table_names()
    assert store.info()["tiles"] == N


# -- tags ---------------------------------------------------------------------------------------------------


def test_an_all_digit_tag_is_refused_because_digits_name_a_version(scratch):
    before = snapshot(scratch["store"])
    assert_clean_error(
        run("versions", scratch["store"], "--table", "tiles", "--tag", "1"),
        "not all digits (digits are version",
    )
    assert_clean_error(run("versions", scratch["store"], "--table", "tiles", "--tag", "x.lock"), "'.lock'")
    assert snapshot(scratch["store"]) == before


def test_tag_with_restore_is_refused_naming_the_two_commands(scratch):
    store = scratch["store"]
    before = snapshot(store)
    result = run("versions", store, "--table", "tiles", "--tag", "x", "--restore", "1")
    assert_clean_error(result, "--restore and --tag go in two runs")
    assert f"versions {store} --table tiles --restore 1" in result.output
    assert f"versions {store} --table tiles --tag x" in result.output
    assert_clean_error(run("versions", store, "--table", "tiles", "--version", "1"), "pass --tag NAME")
    assert snapshot(store) == before


def test_valid_tags_with_dots_dashes_and_digits_still_tag_and_restore(scratch):
    store = scratch["store"]
    tagged = run("versions", store, "--table", "tiles", "--tag", "v1.2-final_3")
    assert tagged.exit_code == 0, tagged.output
    restored = run("versions", store, "--table", "tiles", "--restore", "v1.2-final_3")
    assert restored.exit_code == 0 and "restored as version" in restored.output
    assert embedstore.open(store).catalog.count("tiles") == N


# -- valid names keep working --------------------------------------------------------------------------------


def test_names_at_the_limit_and_with_dots_dashes_underscores_work(scratch):
    store = embedstore.open(scratch["store"])
    longest = "n" * 100
    manifest = store.index(KEY, kind="flat", name="pcam-tumour_v1.2")
    assert manifest.name == "pcam-tumour_v1.2"
    assert (scratch["store"] / "indexes" / manifest.table / "pcam-tumour_v1.2" / "manifest.json").is_file()
    result = heads.train(store, KEY, "tumour", name=longest, **FAST)
    assert result.card.name == longest
    assert heads.predict(store, longest).total_rows == N


def test_a_default_head_name_from_a_long_task_and_key_is_a_valid_name():
    name = default_name("t" * 80, "vit_large_patch14_clip_224.openai_ft_in12k_in1k@stage4+stage3", "mlp")
    assert FileName().accepts(name) and len(name) == 100
    assert FileName().accepts(default_name("a..b", "x...y", "linear"))


@pytest.mark.parametrize("name", ["n" * 100, "model.", "a" * 63 + ".b"])
def test_a_tuning_trial_of_any_valid_head_name_has_a_valid_name(name):
    assert FileName().accepts(name)
    assert FileName().accepts(trial_head_name(name, "0123abcd", 19))


# -- cleanups never reach outside their folder -------------------------------------------------------------


def test_index_cleanup_refuses_a_folder_outside_the_stores_indexes(scratch):
    before = snapshot(scratch["tmp"])
    for folder in (scratch["absolute"], scratch["store"], scratch["store"] / "indexes"):
        with pytest.raises(EmbedstoreError, match="not an index folder inside a store"):
            _remove_unreferenced(folder, set())
    assert snapshot(scratch["tmp"]) == before


def test_index_cleanup_removes_only_its_own_earlier_files(scratch):
    store = embedstore.open(scratch["store"])
    folder = next((scratch["store"] / "indexes").glob("*/main"))
    stray = {"notes.txt": "mine", "index-final.faiss": "not a token", "ids-v1-0123abcd.arrow.bak": "copy"}
    for name, text in stray.items():
        (folder / name).write_text(text)
    old = folder / "index-v1-0123abcd.faiss"
    old.write_text("an earlier save's file")
    store.index(KEY, kind="flat", name="main")  # a rebuild saves, then cleans up
    assert not old.exists()
    assert {name: (folder / name).read_text() for name in stray} == stray
    assert store.search(KEY, tiles=["t000001"], k=3, index="main").hits.height == 3


def test_remove_inside_refuses_a_path_outside_its_folder(scratch):
    keep = scratch["absolute"] / "keep.txt"
    for path in (scratch["absolute"], keep, scratch["store"] / "heads" / ".." / ".." / "absolute"):
        with pytest.raises(EmbedstoreError, match="not inside"):
            remove_inside(path, scratch["store"] / "heads")
    with pytest.raises(EmbedstoreError, match="not inside"):
        remove_inside(scratch["store"] / "heads", scratch["store"] / "heads")
    assert keep.read_text() == "not the store's\n"

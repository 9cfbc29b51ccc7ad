"""`tinytrain.adapt` checks support and query folders as `tinytrain adapt` does, before reading any image,
and its errors name the argument (support=, query=) instead of a flag."""
from __future__ import annotations

import pytest

import tinytrain

from .conftest import write_folder


@pytest.fixture(scope="module")
def backbone():
    return tinytrain.load_backbone("tiny-test", "random")


def test_a_single_class_support_folder_names_the_argument(backbone, tmp_path):
    one = write_folder(tmp_path / "one", 2, classes=["red"])
    with pytest.raises(ValueError, match=r"^support .* has a single class folder"):
        tinytrain.adapt(backbone, one, iterations=1, resolution=32)


def test_query_classes_outside_the_support_name_both_arguments(backbone, tmp_path):
    support = write_folder(tmp_path / "s", 2, classes=["red", "green"])
    query = write_folder(tmp_path / "q", 1, classes=["red", "blue"])
    with pytest.raises(ValueError, match=r"^query .*\['blue'\] are not in the support set \(support "):
        tinytrain.adapt(backbone, support, query=query, iterations=1, resolution=32)


def test_a_missing_query_folder_names_the_argument(backbone, tmp_path):
    support = write_folder(tmp_path / "s", 2, classes=["red", "green"])
    with pytest.raises(FileNotFoundError, match=r"^query folder .*nope does not exist"):
        tinytrain.adapt(backbone, support, query=tmp_path / "nope", iterations=1, resolution=32)


def test_each_folder_is_listed_once_and_its_skipped_files_reported_once(backbone, tmp_path, monkeypatch, caplog):
    """The check before the model loads hands the trees it read to the loader: `adapt` (API and CLI) lists
    each folder once, and still reports a file it cannot read once."""
    import tinytrain.data.folders as folders
    from tinytrain.cli import main

    support = write_folder(tmp_path / "s", 2, classes=["red", "green"])
    query = write_folder(tmp_path / "q", 1, classes=["red", "green"])
    (support / "red" / "notes.txt").write_text("not an image")
    listed = []
    real = folders.list_image_files
    monkeypatch.setattr(folders, "list_image_files", lambda p, **kw: listed.append(p) or real(p, **kw))
    with caplog.at_level("INFO", logger="tinytrain"):
        model = tinytrain.adapt(backbone, support, query=query, iterations=1, resolution=32)
    assert model.summary["query_accuracy"] is not None
    # one listing of each class folder and of each root (loose images), not two
    assert sorted(map(str, listed)) == sorted(map(str, [support, support / "green", support / "red",
                                                         query, query / "green", query / "red"]))
    assert sum("notes.txt" in r.getMessage() for r in caplog.records) == 1
    listed.clear()
    assert main(["adapt", "--model", "tiny-test", "--checkpoint", "random", "--support", str(support),
                 "--query", str(query), "--iterations", "1", "--resolution", "32", "--no-progress"]) == 0
    assert len(listed) == 6

"""What `open_dataset` (data stats/episodes, eval --domains) and `tinytrain data` say about a dataset text that
names nothing readable, and flags that the chosen sampling mode would ignore: one line saying what to change."""
from __future__ import annotations

import pytest
from PIL import Image

from tinytrain.cli import main
from tinytrain.data import open_dataset

from ..deploy.conftest import write_folder


def test_a_path_that_does_not_exist_is_said_to_be_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in (str(tmp_path / "nope"), "./nope", "photos/nope"):
        with pytest.raises(ValueError, match=f"dataset folder {spec} does not exist; check the path"):
            open_dataset(spec)


def test_a_file_is_not_a_dataset_folder(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=f"dataset {f} is a file, not a folder"):
        open_dataset(str(f))


def test_a_misspelt_name_or_source_gets_the_likely_meant_one():
    with pytest.raises(ValueError, match=r"'pocket-digit'.*did you mean pocket-digits\?"):
        open_dataset("pocket-digit")
    with pytest.raises(ValueError, match=r"unknown dataset source 'omniglott'.*did you mean omniglot:/x\?"):
        open_dataset("omniglott:/x")


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_text_is_refused_not_read_as_the_current_folder(spec, tmp_path, monkeypatch):
    write_folder(tmp_path, 2)       # the current folder is a readable dataset
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="the dataset is empty text"):
        open_dataset(spec)


@pytest.mark.parametrize("flags", [["--ways", "2"], ["--shots", "1", "--queries", "1"]])
def test_fixed_mode_flags_without_fixed_mode_are_refused_not_ignored(flags, tmp_path, capsys):
    root = tmp_path / "d"           # five classes: Meta-Dataset sampling works here, and would ignore the flags
    for k in range(5):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 10), (40 * k, 10 * i, 90)).save(root / f"c{k}" / f"{i}.png")
    assert main(["data", "stats", str(root), "--episodes", "2"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(root), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "for --mode fixed" in err and flags[0] in err, err
    assert main(["data", "stats", str(root), "--mode", "fixed", "--ways", "2", "--shots", "1", "--queries", "1",
                 "--episodes", "2"]) == 0

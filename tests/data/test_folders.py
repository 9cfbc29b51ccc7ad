"""The one class-folder reader (`tinytrain.data.folders.read_class_folders`), on real folders of real image files:
the order of classes and files, what is skipped and said, each error, and that the evaluation's datasets, the
support/query folders of `adapt` and the bench mcu folders read a tree the same way."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinytrain.data.datasets import folder_dataset, open_rgb, read_image
from tinytrain.data.folders import (LOOSE_IMAGE, NESTED_FOLDER, ClassFolders, is_image_file, list_image_files,
                                    read_class_folders)

from .conftest import write_image


def jpeg_without_suffix(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(path, format="JPEG")
    return path


def messy_tree(root: Path) -> Path:
    """Three classes with the junk real folders hold."""
    for cls, names in (("b", ["2.png", "10.png", "1.jpg"]), ("a", ["x.PNG"]), ("C", ["z.webp", "y.bmp"])):
        for n in names:
            write_image(root / cls / n)
    jpeg_without_suffix(root / "a" / "camera_upload")         # an image by its content
    (root / "a" / "notes.txt").write_text("taken on holiday")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "a" / "._x.PNG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "b" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    write_image(root / "b" / "more" / "nested.png")           # images must sit directly in the class folder
    write_image(root / ".git" / "hidden_class.png")           # a hidden folder is not a class
    write_image(root / "preview.png")                         # an image beside the class folders
    (root / "README.md").write_text("my photos")               # other files beside them: silently left alone
    return root


def test_classes_and_files_in_order_with_the_junk_left_out_and_said(tmp_path, caplog):
    root = messy_tree(tmp_path / "photos")
    with caplog.at_level(logging.WARNING, logger="tinytrain"):
        found = read_class_folders(root)
    assert isinstance(found, ClassFolders) and found.root == root
    assert found.classes == ["C", "a", "b"]                       # sorted by code point, the same everywhere
    assert {c: [p.name for p in files] for c, files in found.images.items()} == {
        "C": ["y.bmp", "z.webp"], "a": ["camera_upload", "x.PNG"], "b": ["1.jpg", "10.png", "2.png"]}
    assert found.num_images == 7 and found.metadata == 2
    assert {p.relative_to(root).as_posix(): why for p, why in found.skipped} == {
        "preview.png": LOOSE_IMAGE, "a/.DS_Store": "a hidden file", "a/notes.txt": "not an image Pillow can read",
        "b/more": NESTED_FOLDER}
    [note] = [r.getMessage() for r in caplog.records]
    assert note.startswith("tinytrain: note: skipped 4 file(s)") and "preview.png (an image beside the class" in note
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tinytrain"):
        read_class_folders(root, report=False)
    assert not caplog.records
    paths, labels = found.labelled(["b", "C", "a"])
    assert [p.name for p in paths] == ["y.bmp", "z.webp", "camera_upload", "x.PNG", "1.jpg", "10.png", "2.png"]
    assert labels == [1, 1, 2, 2, 0, 0, 0]
    assert found.labelled()[1] == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="'b' is not one of the classes"):
        found.labelled(["C", "a"])


def test_every_reader_of_class_folders_reads_the_tree_alike(tmp_path):
    """eval's folder dataset, adapt's support/query folders and bench mcu's folders: the same classes, files
    and order."""
    from tinytrain.deploy.images import load_class_folder
    from tinytrain.mcu.bench import _folder

    root = messy_tree(tmp_path / "photos")
    found = read_class_folders(root, report=False)
    ds = folder_dataset(root)
    assert ds.classes == found.classes and ds.items == [[str(p) for p in f] for f in found.images.values()]
    assert ds.ignored_metadata == found.metadata and ds.not_read == found.skipped
    support = load_class_folder(root, 16)
    assert support.classes == found.classes and support.paths == [str(p) for p in found.labelled()[0]]
    assert support.y.tolist() == found.labelled()[1] and support.ignored_metadata == 2
    assert _folder(root, ["a", "b", "C", "d"], "--support") == found.labelled(["a", "b", "C", "d"])


def test_a_missing_folder_or_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^--query folder {tmp_path / 'nope'} does not exist$"):
        read_class_folders(tmp_path / "nope", flag="--query")
    with pytest.raises(FileNotFoundError, match="^dataset folder .*nope does not exist"):
        read_class_folders(tmp_path / "nope", what="dataset folder")
    write_image(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"^support .*a\.png is a file, not a folder; give the folder that holds"):
        read_class_folders(tmp_path / "a.png", flag="support")


def test_no_class_folders(tmp_path):
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty has no class folders: it holds no class sub-folders; lay images"):
        read_class_folders(tmp_path / "empty")
    write_image(tmp_path / "flat" / "0.png")
    jpeg_without_suffix(tmp_path / "flat" / "download")
    (tmp_path / "flat" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"^--support .*flat has no class folders: it holds 2 images directly, "
                                         r"with no class sub-folders; lay images out as .*flat/<class name>/<image>"):
        read_class_folders(tmp_path / "flat", flag="--support")


def test_a_class_folder_with_no_image_says_what_it_holds(tmp_path):
    write_image(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"^class folder .*b holds no images; add images"):
        read_class_folders(tmp_path)
    (tmp_path / "b" / "readme.md").write_text("photos to come")
    write_image(tmp_path / "b" / "2023" / "0.png")
    with pytest.raises(ValueError) as e:
        read_class_folders(tmp_path, flag="--query")
    msg = str(e.value)
    assert msg.startswith(f"class folder {tmp_path / 'b'} (in --query) holds no images (skipped 2 file(s)")
    assert f"{tmp_path / 'b' / '2023'}/ ({NESTED_FOLDER})" in msg and "readme.md (not an image Pillow can read)" in msg


def test_a_blank_class_name(tmp_path):
    write_image(tmp_path / "a" / "0.png")
    write_image(tmp_path / "  " / "0.png")
    with pytest.raises(ValueError, match=r"^class folder '.*/  ' \(in --support\) has a blank name"):
        read_class_folders(tmp_path, flag="--support")


def test_too_few_classes(tmp_path):
    write_image(tmp_path / "red" / "0.png")
    assert read_class_folders(tmp_path).classes == ["red"]
    with pytest.raises(ValueError, match=r"^--support .* has a single class folder \('red'\); few-shot adaptation "
                                         r"needs at least two, one sub-folder per class$"):
        read_class_folders(tmp_path, flag="--support", min_classes=2)
    write_image(tmp_path / "blue" / "0.png")
    with pytest.raises(ValueError, match=r"has only 2 class folders \('blue', 'red'\); .* at least 3"):
        read_class_folders(tmp_path, min_classes=3)


def test_classes_outside_the_expected_ones(tmp_path):
    for c in ("red", "purple", "blue"):
        write_image(tmp_path / c / "0.png")
    assert read_class_folders(tmp_path, known=["blue", "green", "purple", "red"]).classes == ["blue", "purple", "red"]
    with pytest.raises(ValueError, match=r"^--query .*: class folders \['purple'\] are not in the support set "
                                         r"\(--support S: 'blue', 'red'\); add them to --support$"):
        read_class_folders(tmp_path, flag="--query", known=["blue", "red"],
                           known_as="in the support set (--support S: 'blue', 'red')", fix="add them to --support")
    with pytest.raises(ValueError, match=r"class folders \['purple', 'red'\] are not among the classes 'blue'; rename"):
        read_class_folders(tmp_path, known=["blue"])


def test_unreadable_images_one_error_naming_the_file(tmp_path):
    """An image-suffixed file that does not decode is listed (it was meant to be an image) and refused when read,
    naming it; the eval dataset, which skips unreadable images, counts it instead."""
    write_image(tmp_path / "a" / "0.png")
    write_image(tmp_path / "b" / "0.png")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "b" / "junk.jpg").write_text("not a jpeg")
    found = read_class_folders(tmp_path)
    assert [p.name for p in found.images["a"]] == ["0.png", "empty.png"] and not found.skipped
    with pytest.raises(ValueError, match=r"^cannot read image .*empty\.png: an empty file; remove it or convert"):
        open_rgb(tmp_path / "a" / "empty.png")
    with pytest.raises(ValueError, match=r"^cannot read image .*junk\.jpg: not an image Pillow can read; remove it"):
        read_image(tmp_path / "b" / "junk.jpg")
    from tinytrain.deploy.images import load_class_folder
    with pytest.raises(ValueError, match=r"^cannot read image .*empty\.png"):
        load_class_folder(tmp_path, 16)
    ds = folder_dataset(tmp_path)
    assert ds.class_sizes() == [1, 2] and ds.skipped == 1 and ds.verify() == 1 and ds.class_sizes() == [1, 1]


def test_is_image_file_leaves_hidden_files_out(tmp_path):
    """The quick suffix test of the Meta-Dataset layouts takes what the reader takes by suffix."""
    write_image(tmp_path / "a.png")
    for name in (".a.png", "._a.png", "a.txt"):
        (tmp_path / name).write_bytes((tmp_path / "a.png").read_bytes())
    assert [p.name for p in sorted(tmp_path.iterdir()) if is_image_file(p)] == ["a.png"]
    assert [p.name for p in list_image_files(tmp_path).images] == ["a.png", "a.txt"]     # a.txt: by its content

import json
import warnings

import numpy as np
import pytest

from tinytrain.data import ClassificationView, folder_dataset, open_dataset
from tinytrain.data.metadataset import OMNIGLOT_VALID_ALPHABETS, open_source
from tinytrain.data.transforms import eval_transform

from .conftest import make_folder, write_image


def test_folder_reads_formats_and_grayscale(tmp_path):
    write_image(tmp_path / "a" / "x.png")
    write_image(tmp_path / "a" / "y.jpg")
    write_image(tmp_path / "b" / "z.ppm")
    write_image(tmp_path / "b" / "g.png", mode="L")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    ds = open_dataset(str(tmp_path))
    assert ds.classes == ["a", "b"] and ds.class_sizes() == [2, 2] and ds.num_images == 4
    for c in range(2):
        for j in range(2):
            img = ds.load(c, j)
            assert img.mode == "RGB" and img.size == (12, 10)


def test_folder_skips_empty_and_truncated_files(tmp_path):
    make_folder(tmp_path, 2, 3)
    (tmp_path / "class000" / "empty.png").write_bytes(b"")
    good = (tmp_path / "class001" / "000.png").read_bytes()
    (tmp_path / "class001" / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    ds = folder_dataset(tmp_path)
    assert ds.skipped == 1 and ds.class_sizes() == [3, 4]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        img = ds.load(1, 3)  # the truncated file: replaced by the next readable item, counted
    assert img.size == (8, 8) and ds.skipped == 2
    ds2 = folder_dataset(tmp_path)
    assert ds2.verify() == 1 and ds2.class_sizes() == [3, 3] and ds2.skipped == 2


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        folder_dataset(tmp_path)
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "a.png").write_bytes(b"garbage")
    ds = folder_dataset(tmp_path)
    with pytest.raises(ValueError, match="only_bad"):
        ds.verify()
    (tmp_path / "empty_cls").mkdir()
    (tmp_path / "empty_cls" / "e.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty_cls"):
        folder_dataset(tmp_path)
    with pytest.raises(ValueError, match="pocket-symbols"):
        open_dataset("no-such-dataset")
    with pytest.raises(ValueError, match="split"):
        open_dataset(str(tmp_path), split="train")
    with pytest.raises(ValueError, match="unknown Meta-Dataset source"):
        open_source("imagenet", tmp_path)


def test_classification_view(tmp_path):
    ds = folder_dataset(make_folder(tmp_path, 3, [2, 3, 4]))
    view = ClassificationView(ds, eval_transform(16), classes=[2, 0])
    assert len(view) == 6 and view.num_classes == 2
    x, y = view[0]
    assert x.shape == (3, 16, 16) and y == 0 and view[5][1] == 1


def test_traffic_sign(tmp_path):
    for c in range(3):
        for i in range(2):
            write_image(tmp_path / "GTSRB/Final_Training/Images" / f"{c:05d}" / f"00000_{i:05d}.ppm")
    ds = open_dataset(f"traffic_sign:{tmp_path}", split="test")
    assert ds.classes == ["0", "1", "2"] and ds.num_images == 6 and ds.load(0, 0).mode == "RGB"
    with pytest.raises(ValueError, match="no classes in split 'train'"):
        open_dataset(f"traffic_sign:{tmp_path}", split="train")


def test_omniglot_splits_and_groups(tmp_path):
    for set_name, alphabets in (("images_background", ["Greek", OMNIGLOT_VALID_ALPHABETS[0]]),
                                ("images_evaluation", ["Tengwar"])):
        for a in alphabets:
            for ch in range(2):
                for i in range(3):
                    write_image(tmp_path / set_name / a / f"character{ch + 1:02d}" / f"{i}.png", mode="L")
    full = open_dataset(f"omniglot:{tmp_path}")
    assert len(full.classes) == 6 and full.group_names == ["Alphabet_of_the_Magi", "Greek", "Tengwar"]
    assert full.groups == [0, 0, 1, 1, 2, 2]
    train, val, test = (open_dataset(f"omniglot:{tmp_path}", s) for s in ("train", "val", "test"))
    assert [c.split("/")[0] for c in train.classes] == ["Greek"] * 2
    assert [c.split("/")[0] for c in val.classes] == ["Alphabet_of_the_Magi"] * 2
    assert test.classes == ["Tengwar/character01", "Tengwar/character02"] and test.groups == [0, 0]


def test_aircraft_variants_and_boxes(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    rows = {"1001": "737-400", "1002": "737-400", "1003": "A380", "1004": "737-900"}
    for img in rows:
        write_image(data / "images" / f"{img}.jpg", size=(40, 30))
    (data / "images_variant_trainval.txt").write_text("".join(f"{k} {v}\n" for k, v in rows.items()))
    (data / "images_box.txt").write_text("".join(f"{k} 2 3 21 18\n" for k in rows))
    ds = open_dataset(f"aircraft:{tmp_path}")
    assert ds.classes == ["737-400", "737-900", "A380"] and ds.class_sizes() == [2, 1, 1]
    assert ds.load(0, 0).size == (19, 15)
    assert open_dataset(f"aircraft:{tmp_path}", "test").classes == ["737-400"]
    assert open_dataset(f"aircraft:{tmp_path}", "val").classes == ["737-900"]
    assert open_dataset(f"aircraft:{tmp_path}", "train").classes == ["A380"]


def test_vgg_flower_labels_file(tmp_path):
    from scipy.io import savemat
    labels = [5, 5, 1, 10, 1]
    for i in range(len(labels)):
        write_image(tmp_path / "jpg" / f"image_{i + 1:05d}.jpg")
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([labels])})
    ds = open_dataset(f"vgg_flower:{tmp_path}")
    assert ds.classes == ["001", "005", "010"] and ds.class_sizes() == [2, 2, 1]
    assert open_dataset(f"vgg_flower:{tmp_path}", "test").classes == ["005"]
    assert open_dataset(f"vgg_flower:{tmp_path}", "val").classes == ["010"]
    assert open_dataset(f"vgg_flower:{tmp_path}", "train").classes == ["001"]


def test_cu_birds_and_dtd(tmp_path):
    for c in ("001.Black_footed_Albatross", "008.Rhinoceros_Auklet", "044.Frigatebird"):
        write_image(tmp_path / "CUB_200_2011" / "images" / c / "a.jpg")
    assert open_dataset(f"cu_birds:{tmp_path}", "test").classes == ["008.Rhinoceros_Auklet"]
    assert open_dataset(f"cu_birds:{tmp_path}", "val").classes == ["044.Frigatebird"]
    assert open_dataset(f"cu_birds:{tmp_path}", "train").classes == ["001.Black_footed_Albatross"]
    for c in ("banded", "gauzy", "braided"):
        write_image(tmp_path / "dtd" / "images" / c / "x.jpg")
    assert open_dataset(f"dtd:{tmp_path}", "test").classes == ["banded"]
    assert open_dataset(f"dtd:{tmp_path}", "val").classes == ["gauzy"]
    assert open_dataset(f"dtd:{tmp_path}", "train").classes == ["braided"]


def test_quickdraw_npy(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("angel", 4), ("ant", 3), ("cat", 5)):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 255, size=(n, 784), dtype=np.uint8))
    ds = open_dataset(f"quickdraw:{tmp_path}")
    assert ds.classes == ["angel", "ant", "cat"] and ds.class_sizes() == [4, 3, 5]
    img = ds.load(2, 4)
    assert img.size == (28, 28) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img)[..., 0].ravel(), np.load(tmp_path / "cat.npy")[4])
    assert open_dataset(f"quickdraw:{tmp_path}", "test").classes == ["angel"]
    assert open_dataset(f"quickdraw:{tmp_path}", "train").classes == ["cat"]


def test_fungi_annotations(tmp_path):
    cats = [{"id": 0, "name": "Abortiporus biennis"}, {"id": 11, "name": "Agaricus impudicus"},
            {"id": 650, "name": "Leucoagaricus leucothites"}]
    images, anns = [], []
    for k, c in enumerate([0, 0, 11, 650]):
        f = f"images/{c}/{k}.JPG"
        write_image(tmp_path / f)
        images.append({"id": k, "file_name": f})
        anns.append({"id": k, "image_id": k, "category_id": c})
    half = {"images": images[:2], "annotations": anns[:2], "categories": cats}
    rest = {"images": images[2:], "annotations": anns[2:], "categories": cats}
    (tmp_path / "train.json").write_text(json.dumps(half))
    (tmp_path / "val.json").write_text(json.dumps(rest))
    ds = open_dataset(f"fungi:{tmp_path}")
    assert ds.classes == ["0000.Abortiporus biennis", "0011.Agaricus impudicus", "0650.Leucoagaricus leucothites"]
    assert ds.class_sizes() == [2, 1, 1]
    assert open_dataset(f"fungi:{tmp_path}", "test").classes == ["0011.Agaricus impudicus"]
    assert open_dataset(f"fungi:{tmp_path}", "val").classes == ["0650.Leucoagaricus leucothites"]


def test_mscoco_crops(tmp_path):
    write_image(tmp_path / "train2017" / "000001.jpg", size=(100, 80))
    d = {"images": [{"id": 1, "file_name": "000001.jpg", "width": 100, "height": 80}],
         "categories": [{"id": 2, "name": "bicycle"}, {"id": 1, "name": "person"}],
         "annotations": [{"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 10], "iscrowd": 0},
                         {"image_id": 1, "category_id": 1, "bbox": [90, 70, 20, 20], "iscrowd": 0},
                         {"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(d))
    ds = open_dataset(f"mscoco:{tmp_path}")
    assert ds.classes == ["person", "bicycle"] and ds.class_sizes() == [1, 1]
    assert ds.load(1, 0).size == (24, 12)      # 20x10 box enlarged 1.2x
    assert ds.load(0, 0).size == (12, 12)      # clipped at the image border
    assert open_dataset(f"mscoco:{tmp_path}", "test").classes == ["bicycle"]
    assert open_dataset(f"mscoco:{tmp_path}", "val").classes == ["person"]


def test_folder_reads_what_pillow_reads_and_reports_the_rest(tmp_path, caplog):
    """Any suffix Pillow reads by content (.jfif, .jpe, none); hidden files, sub-folders of a class folder
    and non-images are skipped, each named with the reason in one note."""
    import logging

    from PIL import Image

    from tinytrain.data.folders import list_image_files

    write_image(tmp_path / "a" / "x.png")
    for name in ("y.jfif", "z.jpe", "camera_upload"):
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "a" / name, format="JPEG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes((tmp_path / "a" / "x.png").read_bytes())
    write_image(tmp_path / "a" / "nested" / "n.png")
    (tmp_path / "a" / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    write_image(tmp_path / "b" / "g.png", mode="L")
    with caplog.at_level(logging.WARNING, logger="tinytrain"):
        ds = folder_dataset(tmp_path)
    assert ds.classes == ["a", "b"] and ds.class_sizes() == [4, 1] and ds.ignored_metadata == 1
    assert {p.name: why for p, why in ds.not_read} == {
        ".hidden.png": "a hidden file", "nested": "a folder inside a class folder (images must sit directly in it)",
        "notes.txt": "not an image Pillow can read"}
    [note] = [r.getMessage() for r in caplog.records]
    assert note.startswith("tinytrain: note: skipped 3 file(s)") and "notes.txt (not an image Pillow can read)" in note
    assert all(ds.load(0, j).size == (12, 10) for j in range(4))
    listing = list_image_files(tmp_path / "a")                      # recursive: the nested image is read
    assert sorted(p.name for p in listing.images) == ["camera_upload", "n.png", "x.png", "y.jfif", "z.jpe"]

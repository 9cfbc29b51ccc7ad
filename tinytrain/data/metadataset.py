"""Readers for the native on-disk layouts of the nine Meta-Dataset sources used by TinyTrain, with
Meta-Dataset's train/valid/test class splits.

Split facts come from google-research/meta-dataset (Apache-2.0): `dataset_conversion/splits/*.json`
(commit 3aa6933e) and `dataset_specs/omniglot_dataset_spec.json`. Aircraft, CUB, DTD, VGG Flower, QuickDraw,
Traffic Sign and MSCOCO lists are reproduced in full (test and valid; train is the rest of the classes);
Fungi is stored as the category ids of its valid and test classes (its class names are "%04d.<name>").
Omniglot: background set = train except its 5 smallest alphabets (valid, 81 characters); evaluation set = test.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import ArrayDataset, FileDataset, ImageDataset
from .folders import is_image_file
from ..errors import BadInput

SPLITS = ("train", "val", "test", "all")

AIRCRAFT_TEST = ["737-400", "737-800", "757-200", "767-400", "ATR-42", "BAE-125", "Beechcraft 1900", "Boeing 717",
                 "CRJ-200", "CRJ-700", "E-170", "L-1011", "MD-90", "Saab 2000", "Spitfire"]
AIRCRAFT_VALID = ["737-900", "757-300", "767-200", "A310", "A320", "BAE 146-300", "CRJ-900", "DC-10", "DC-8",
                  "DC-9-30", "DHC-8-300", "Gulfstream V", "SR-20", "Tornado", "Yak-42"]
DTD_TEST = ["banded", "bumpy", "crosshatched", "knitted", "sprinkled", "stratified", "woven"]
DTD_VALID = ["gauzy", "grid", "lined", "paisley", "porous", "scaly", "spiralled"]
FLOWER_TEST = [5, 9, 15, 19, 35, 40, 41, 42, 45, 46, 65, 85, 89, 94, 96, 98]  # 1-based labels
FLOWER_VALID = [10, 16, 17, 23, 26, 47, 53, 56, 57, 62, 82, 83, 86, 97, 102]
CUB_TEST = [8, 9, 15, 20, 28, 30, 35, 39, 45, 46, 82, 85, 94, 101, 103, 112, 118, 122, 128, 133, 134, 137, 147,
            148, 163, 168, 169, 170, 193, 194]  # numeric prefix of the class folder "NNN.Name"
CUB_VALID = [44, 51, 52, 55, 57, 61, 64, 66, 68, 72, 76, 80, 84, 96, 113, 121, 127, 136, 140, 145, 150, 155, 159,
             162, 172, 176, 178, 198, 199, 200]
QUICKDRAW_TEST = ["angel", "animal migration", "axe", "bat", "beard", "bee", "bridge", "broom", "bucket",
                  "butterfly", "cactus", "campfire", "cookie", "couch", "cow", "diving board", "donut", "drill",
                  "eraser", "feather", "finger", "fire hydrant", "flashlight", "frying pan", "giraffe", "goatee",
                  "hammer", "helicopter", "helmet", "hockey stick", "hourglass", "house", "kangaroo", "lantern",
                  "mailbox", "mouse", "palm tree", "parrot", "rabbit", "rollerskates", "saw", "saxophone",
                  "snowman", "spider", "stitches", "streetlight", "sweater", "table", "umbrella", "wheel",
                  "wine bottle", "yoga"]
QUICKDRAW_VALID = ["ant", "anvil", "backpack", "baseball", "basketball", "binoculars", "bread", "bulldozer", "bus",
                   "calendar", "camel", "candle", "carrot", "church", "clarinet", "coffee cup", "eye", "firetruck",
                   "flower", "golf club", "grapes", "hat", "hot dog", "ice cream", "knife", "lobster", "matches",
                   "mermaid", "microwave", "nose", "panda", "paper clip", "pond", "purse", "radio",
                   "roller coaster", "skyscraper", "smiley face", "snake", "steak", "stethoscope", "suitcase",
                   "teddy-bear", "television", "tennis racquet", "toaster", "toilet", "tooth", "tornado",
                   "trumpet", "waterslide", "wristwatch"]
MSCOCO_TEST = ["bicycle", "car", "airplane", "bus", "truck", "boat", "stop sign", "bench", "bird", "horse", "sheep",
               "cow", "giraffe", "tie", "frisbee", "skis", "baseball bat", "tennis racket", "bottle", "wine glass",
               "cup", "fork", "spoon", "bowl", "banana", "apple", "orange", "hot dog", "pizza", "chair", "couch",
               "potted plant", "bed", "mouse", "keyboard", "toaster", "sink", "refrigerator", "vase", "scissors"]
MSCOCO_VALID = ["person", "motorcycle", "train", "traffic light", "fire hydrant", "parking meter", "cat", "dog",
                "elephant", "bear", "zebra", "backpack", "umbrella", "handbag", "suitcase", "snowboard",
                "sports ball", "kite", "baseball glove", "skateboard", "surfboard", "knife", "sandwich", "broccoli",
                "carrot", "donut", "cake", "dining table", "toilet", "tv", "laptop", "remote", "cell phone",
                "microwave", "oven", "book", "clock", "teddy bear", "hair drier", "toothbrush"]
FUNGI_TEST = [1341, 655, 665, 680, 686, 694, 696, 1386, 701, 1184, 703, 707, 722, 725, 728, 732, 734, 746, 756, 1165,
              761, 1349, 767, 768, 773, 781, 782, 785, 789, 795, 1359, 11, 13, 20, 22, 1182, 37, 38, 824, 826, 907,
              1172, 1320, 855, 857, 877, 878, 885, 63, 65, 67, 1179, 897, 86, 88, 902, 101, 105, 108, 801, 1183, 909,
              1089, 122, 126, 127, 1216, 1217, 1219, 1222, 1369, 1231, 135, 137, 1233, 957, 156, 158, 159, 971, 976,
              979, 985, 990, 992, 994, 171, 1246, 1253, 1261, 1104, 178, 1272, 1022, 1024, 191, 199, 207, 209, 211,
              924, 213, 823, 1042, 1046, 1047, 240, 243, 246, 1290, 251, 255, 257, 259, 1064, 1115, 266, 272, 1076,
              1295, 278, 1197, 281, 286, 293, 296, 1122, 1123, 1193, 1155, 1305, 1032, 1127, 1129, 1131, 309, 1136,
              319, 323, 325, 327, 1312, 335, 986, 1139, 350, 1141, 359, 363, 1146, 372, 373, 374, 375, 376, 1151, 402,
              403, 408, 410, 411, 1133, 412, 417, 1311, 1313, 1171, 422, 1206, 425, 431, 1154, 452, 460, 464, 487,
              517, 520, 524, 1016, 534, 537, 546, 547, 548, 556, 561, 1132, 1332, 584, 588, 611, 1338, 615, 625, 629,
              636, 639, 644, 883]
FUNGI_VALID = [650, 1159, 653, 661, 667, 673, 675, 678, 687, 1347, 700, 702, 704, 705, 709, 716, 720, 724, 730, 731,
               733, 738, 745, 749, 753, 1348, 848, 762, 1038, 1342, 1211, 1344, 770, 771, 4, 9, 14, 16, 17, 19, 23,
               809, 816, 34, 36, 43, 1385, 830, 1391, 1329, 1196, 841, 51, 52, 55, 908, 852, 853, 854, 60, 864, 867,
               868, 869, 1177, 874, 884, 66, 1178, 894, 895, 72, 899, 73, 80, 85, 90, 1202, 110, 112, 115, 915, 917,
               1225, 929, 930, 136, 142, 941, 147, 949, 150, 963, 969, 978, 981, 164, 169, 1000, 1248, 1190, 1255,
               1094, 176, 1266, 179, 185, 187, 190, 193, 194, 198, 200, 203, 1030, 214, 220, 1275, 1278, 236, 244,
               252, 254, 1067, 1292, 1085, 1087, 1097, 284, 285, 1109, 288, 292, 294, 1117, 297, 300, 1333, 1307,
               1137, 1138, 329, 980, 332, 336, 344, 347, 349, 356, 357, 361, 1145, 364, 1188, 370, 1187, 377, 383,
               1287, 401, 1153, 1306, 418, 419, 427, 1318, 433, 436, 441, 443, 448, 1207, 449, 468, 491, 495, 1258,
               513, 1323, 1265, 519, 523, 526, 528, 532, 539, 541, 545, 559, 560, 567, 589, 590, 597, 608, 1339, 617,
               626, 638, 642]
OMNIGLOT_VALID_ALPHABETS = ["Alphabet_of_the_Magi", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
                            "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Ojibwe_(Canadian_Aboriginal_Syllabics)",
                            "Tagalog"]
MSCOCO_BOX_SCALE = 1.2  # Meta-Dataset enlarges each annotation box by this ratio before cropping


def _images_in(d: Path) -> list[str]:
    return [str(f) for f in sorted(d.iterdir()) if is_image_file(f) and f.stat().st_size > 0]


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise BadInput(f"{root} does not look like the expected layout: none of {', '.join(candidates)} found")


def _split_by(keys: list, split: str, valid: set, test: set, train: set | None = None) -> list[int]:
    """Class indices of `split`: test/valid from the published lists, train = the rest (or `train`)."""
    if split == "all":
        return list(range(len(keys)))
    if split == "test":
        return [i for i, k in enumerate(keys) if k in test]
    if split == "val":
        return [i for i, k in enumerate(keys) if k in valid]
    if train is not None:
        return [i for i, k in enumerate(keys) if k in train]
    return [i for i, k in enumerate(keys) if k not in valid and k not in test]


def _finish(ds: ImageDataset, keys: list, split: str, valid, test, train=None) -> ImageDataset:
    idx = _split_by(keys, split, set(valid), set(test), None if train is None else set(train))
    if not idx:
        raise BadInput(f"{ds.name} has no classes in split {split!r} (Meta-Dataset puts none there, or the "
                         "files of that split are missing); choose another --split")
    return ds if len(idx) == len(keys) else ds.subset(idx, f"{ds.name}:{split}")


def read_traffic_sign(root: Path, split: str) -> ImageDataset:
    """GTSRB training set: Final_Training/Images/000NN/*.ppm (43 classes, all in Meta-Dataset's test split).
    Whole images are used, as in Meta-Dataset (the ROI columns of GT-000NN.csv are ignored)."""
    base = _find(root, "GTSRB/Final_Training/Images", "Final_Training/Images", "Images", ".")
    dirs = sorted(d for d in base.iterdir() if d.is_dir() and d.name.isdigit())
    if not dirs:
        raise BadInput(f"no class folders 00000..00042 under {base}")
    ds = FileDataset("traffic_sign", [str(int(d.name)) for d in dirs], [_images_in(d) for d in dirs])
    keys = [int(d.name) for d in dirs]
    return _finish(ds, keys, split, valid=[], test=keys, train=[])


def read_omniglot(root: Path, split: str) -> ImageDataset:
    """images_background/ and images_evaluation/, each <alphabet>/<character>/*.png; groups = alphabets."""
    sets = [(name, root / name) for name in ("images_background", "images_evaluation") if (root / name).is_dir()]
    if not sets:
        raise BadInput(f"{root} has neither images_background/ nor images_evaluation/ (Omniglot layout)")
    classes, items, groups, group_names, keys = [], [], [], [], []
    for set_name, d in sets:
        for alphabet in sorted(a for a in d.iterdir() if a.is_dir()):
            group_names.append(alphabet.name)
            for ch in sorted(c for c in alphabet.iterdir() if c.is_dir()):
                classes.append(f"{alphabet.name}/{ch.name}")
                items.append(_images_in(ch))
                groups.append(len(group_names) - 1)
                keys.append("test" if set_name == "images_evaluation" else
                            "val" if alphabet.name in OMNIGLOT_VALID_ALPHABETS else "train")
    ds = FileDataset("omniglot", classes, items, groups, group_names)
    if split == "all":
        return ds
    idx = [i for i, k in enumerate(keys) if k == split]
    if not idx:
        raise BadInput(f"omniglot split {split!r} is empty under {root}: train/val need images_background/, "
                         "test needs images_evaluation/")
    return ds.subset(idx, f"omniglot:{split}")


def read_aircraft(root: Path, split: str) -> ImageDataset:
    """FGVC-Aircraft 2013b: data/images/<id>.jpg, data/images_variant_{train,val,test}.txt ("<id> <variant>"),
    cropped to data/images_box.txt as Meta-Dataset does (it drops the copyright banner)."""
    data = _find(root, "fgvc-aircraft-2013b/data", "data", ".")
    label_of: dict[str, str] = {}
    for part in ("train", "val", "test", "trainval"):
        f = data / f"images_variant_{part}.txt"
        if f.exists():
            for line in f.read_text().splitlines():
                if line.strip():
                    img, variant = line.strip().split(" ", 1)
                    label_of[img] = variant
    if not label_of:
        raise BadInput(f"no images_variant_*.txt under {data} (FGVC-Aircraft layout)")
    boxes = {}
    if (data / "images_box.txt").exists():
        for line in (data / "images_box.txt").read_text().splitlines():
            p = line.split()
            if len(p) == 5:
                boxes[p[0]] = tuple(float(v) for v in p[1:])
    variants = sorted(set(label_of.values()))
    per = {v: [] for v in variants}
    for img in sorted(label_of):
        path = str(data / "images" / f"{img}.jpg")
        per[label_of[img]].append((path, boxes[img]) if img in boxes else path)
    ds = FileDataset("aircraft", variants, [per[v] for v in variants])
    return _finish(ds, variants, split, AIRCRAFT_VALID, AIRCRAFT_TEST)


def read_vgg_flower(root: Path, split: str) -> ImageDataset:
    """Oxford 102 Flowers: jpg/image_NNNNN.jpg and imagelabels.mat (labels 1..102, in image order)."""
    mat = _find(root, "imagelabels.mat")
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover
        raise BadInput("reading VGG Flower's imagelabels.mat needs scipy: pip install scipy") from exc
    labels = np.asarray(loadmat(str(mat))["labels"]).ravel().astype(int)
    jpg = _find(root, "jpg")
    per: dict[int, list[str]] = {}
    for i, lab in enumerate(labels, start=1):
        f = jpg / f"image_{i:05d}.jpg"
        per.setdefault(int(lab), [])
        if f.exists() and f.stat().st_size > 0:
            per[int(lab)].append(str(f))
    keys = sorted(per)
    ds = FileDataset("vgg_flower", [f"{k:03d}" for k in keys], [per[k] for k in keys])
    return _finish(ds, keys, split, FLOWER_VALID, FLOWER_TEST)


def read_cu_birds(root: Path, split: str) -> ImageDataset:
    """CUB-200-2011: images/NNN.Name/*.jpg (200 classes)."""
    images = _find(root, "CUB_200_2011/images", "images")
    dirs = sorted(d for d in images.iterdir() if d.is_dir())
    ds = FileDataset("cu_birds", [d.name for d in dirs], [_images_in(d) for d in dirs])
    keys = [int(d.name.split(".", 1)[0]) if d.name.split(".", 1)[0].isdigit() else -1 for d in dirs]
    return _finish(ds, keys, split, CUB_VALID, CUB_TEST)


def read_dtd(root: Path, split: str) -> ImageDataset:
    """Describable Textures: images/<texture>/*.jpg (47 classes)."""
    images = _find(root, "dtd/images", "images")
    dirs = sorted(d for d in images.iterdir() if d.is_dir())
    ds = FileDataset("dtd", [d.name for d in dirs], [_images_in(d) for d in dirs])
    return _finish(ds, [d.name for d in dirs], split, DTD_VALID, DTD_TEST)


def _quickdraw_item(row: np.ndarray) -> np.ndarray:
    return np.asarray(row, dtype=np.uint8).reshape(28, 28)


def read_quickdraw(root: Path, split: str) -> ImageDataset:
    """QuickDraw numpy bitmaps: <class name>.npy, each (N, 784) uint8 (28x28, strokes bright on black).
    Files are memory-mapped, so the 345 classes open instantly."""
    files = sorted(root.glob("*.npy")) or sorted(root.glob("numpy_bitmap/*.npy"))
    if not files:
        raise BadInput(f"no <class>.npy files under {root} (QuickDraw numpy_bitmap layout)")
    names = [f.stem.replace("full_numpy_bitmap_", "") for f in files]
    arrays = [np.load(f, mmap_mode="r") for f in files]
    for f, a in zip(files, arrays):
        if a.ndim != 2 or a.shape[1] != 784:
            raise BadInput(f"{f} has shape {a.shape}; QuickDraw bitmaps are (N, 784)")
    ds = ArrayDataset("quickdraw", names, arrays, transform_item=_quickdraw_item)
    return _finish(ds, names, split, QUICKDRAW_VALID, QUICKDRAW_TEST)


def read_fungi(root: Path, split: str) -> ImageDataset:
    """FGVCx Fungi 2018: train.json + val.json (COCO-style images/annotations/categories) and images/."""
    anns = [root / n for n in ("train.json", "val.json") if (root / n).exists()]
    if not anns:
        raise BadInput(f"no train.json/val.json under {root} (FGVCx Fungi layout)")
    categories: dict[int, str] = {}
    per: dict[int, list[str]] = {}
    for f in anns:
        d = json.loads(f.read_text())
        categories.update({int(c["id"]): c["name"] for c in d["categories"]})
        files = {im["id"]: im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            per.setdefault(int(a["category_id"]), []).append(str(root / files[a["image_id"]]))
    keys = sorted(categories)
    ds = FileDataset("fungi", [f"{k:04d}.{categories[k]}" for k in keys], [sorted(per.get(k, [])) for k in keys])
    return _finish(ds, keys, split, FUNGI_VALID, FUNGI_TEST)


def read_mscoco(root: Path, split: str) -> ImageDataset:
    """MSCOCO 2017: annotations/instances_train2017.json and train2017/; each object box (enlarged 1.2x,
    clipped to the image) is one item of its category. Crowd annotations and empty boxes are skipped."""
    ann = _find(root, "annotations/instances_train2017.json", "instances_train2017.json")
    images_dir = _find(root, "train2017", "images", ".")
    d = json.loads(ann.read_text())
    cats = {int(c["id"]): c["name"] for c in d["categories"]}
    info = {im["id"]: (im["file_name"], im["width"], im["height"]) for im in d["images"]}
    per: dict[int, list] = {k: [] for k in cats}
    for a in d["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        if w < 1 or h < 1:
            continue
        fname, iw, ih = info[a["image_id"]]
        cx, cy, s = x + w / 2, y + h / 2, MSCOCO_BOX_SCALE
        box = (max(0.0, cx - w * s / 2), max(0.0, cy - h * s / 2), min(iw, cx + w * s / 2), min(ih, cy + h * s / 2))
        per[int(a["category_id"])].append((str(images_dir / fname), box))
    keys = sorted(cats)
    names = [cats[k] for k in keys]
    ds = FileDataset("mscoco", names, [per[k] for k in keys])
    return _finish(ds, names, split, MSCOCO_VALID, MSCOCO_TEST, train=[])


READERS: dict[str, Callable[[Path, str], ImageDataset]] = {
    "traffic_sign": read_traffic_sign, "omniglot": read_omniglot, "aircraft": read_aircraft,
    "vgg_flower": read_vgg_flower, "cu_birds": read_cu_birds, "dtd": read_dtd, "quickdraw": read_quickdraw,
    "fungi": read_fungi, "mscoco": read_mscoco,
}


def open_source(source: str, root: str | Path, split: str = "all") -> ImageDataset:
    """Open a Meta-Dataset source in its native layout; split is train|val|test|all (Meta-Dataset's)."""
    if source not in READERS:
        raise BadInput(f"unknown Meta-Dataset source {source!r}; valid: {', '.join(READERS)}")
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder; give the {source} dataset's extracted root")
    return READERS[source](root, split)

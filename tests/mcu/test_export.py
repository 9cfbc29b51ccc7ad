"""`tinytrain export --format c`: what the tree holds, and clear errors for what it cannot export."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tinytrain.cli import main
from tinytrain.mcu.export import META_FILE, MODEL_FILE, runtime_sources

from .conftest import TINY_PLAN, save_model


def export(model, out, *extra) -> int:
    return main(["export", "--model-dir", str(model), "--format", "c", "--out", str(out), *extra])


def test_tree_holds_runtime_model_and_metadata(tiny_model, tmp_path, capsys):
    out = tmp_path / "c"
    assert export(tiny_model, out) == 0
    names = {p.name for p in out.iterdir()}
    assert {s.name for s in runtime_sources()} <= names and {MODEL_FILE, META_FILE, "README.md"} <= names
    meta = json.loads((out / META_FILE).read_text())
    assert meta["classes"] == ["a", "b", "c"] and meta["earliest_trained_layer"] == 6
    assert meta["engine_plan"]["biases"] == [7, 12]
    src = (out / MODEL_FILE).read_text()
    assert f"float tt_arena[{meta['memory_plan']['arena_floats']}];" in src
    assert "malloc" not in "".join(p.read_text() for p in out.glob("*.c"))
    printed = capsys.readouterr().out
    assert f"arena {meta['arena_bytes']:,} B" in printed


def test_exported_weights_are_the_exact_float32_values(tiny_model, tmp_path):
    """Every frozen weight written as text parses back to the same float32 bits."""
    import re

    import numpy as np

    from tinytrain.deploy.adapted import load_adapted

    assert export(tiny_model, tmp_path / "c") == 0
    src = (tmp_path / "c" / MODEL_FILE).read_text()
    body = re.search(r"L9_w\[\d+\] = \{(.*?)\};", src, re.S).group(1)
    got = np.array([float(v.rstrip("f")) for v in body.replace("\n", "").split(",")], dtype=np.float32)
    want = load_adapted(tiny_model).predictor.backbone.conv_modules()[9].conv.weight.detach().numpy().ravel()
    assert got.tobytes() == want.tobytes()


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_re_export_needs_overwrite_and_never_deletes_the_users_files(tiny_model, tmp_path, capsys):
    out = tmp_path / "c"
    assert export(tiny_model, out) == 0
    first = tree(out)
    # an earlier export is not replaced without --overwrite
    assert export(tiny_model, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinytrain export: error:") and "--overwrite" in err and str(out) in err
    assert len(err.strip().splitlines()) == 1 and tree(out) == first
    # the user's own files in it: refused even with --overwrite, naming them, nothing touched
    (out / "main.c").write_text("int main(void) { return 0; }\n")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("keep")
    before = tree(out)
    assert export(tiny_model, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "main.c" in err and "notes/" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert tree(out) == before
    # only the export's own files (one of them edited): --overwrite replaces them
    (out / "main.c").unlink()
    shutil.rmtree(out / "notes")
    (out / MODEL_FILE).write_text("/* edited */")
    assert export(tiny_model, out, "--overwrite") == 0
    assert tree(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "tiny-model"]     # no temporary folders left
    # a folder that is not an export is never written into
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    for extra in ((), ("--overwrite",)):
        assert export(tiny_model, other, *extra) == 2
        assert "not a tinytrain C export" in capsys.readouterr().err
        assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_export_c_api_refuses_before_loading(tiny_model, tmp_path):
    from tinytrain.mcu.export import export_c

    out = tmp_path / "c"
    export_c(tiny_model, out)
    with pytest.raises(ValueError, match="overwrite=True"):
        export_c(tmp_path / "no-such-model", out)        # the folder is checked before the model is read
    export_c(tiny_model, out, overwrite=True)


INJECTION = "x */ int injected(void){return 42;} /*"
ODD_NAMES = [INJECTION, 'quote " and \\ backslash', "trigraph ??/\nnewline", "caf\u00e9 \u732b\ttab", "a?b"]


def without_string_literals(src: str) -> str:
    import re
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', src)


def test_class_names_cannot_inject_code_into_the_generated_c(tmp_path):
    """Class names are user text (folder names, dict keys, a shared model folder): they may reach the C
    source only as escaped string literals. A name that closes a comment must not add a function."""
    import re
    import subprocess

    from tinytrain.mcu import build

    model = save_model(tmp_path / "model", TINY_PLAN, classes=ODD_NAMES)
    out = tmp_path / "c"
    assert export(model, out) == 0
    src = (out / MODEL_FILE).read_text()
    code = without_string_literals(src)
    assert "injected" not in code and "return 42" not in code
    comments = "".join(re.findall(r"/\*.*?\*/", code, re.S))
    assert not any(w in comments for w in ("injected", "caf", "trigraph", "backslash", "a?b"))
    assert json.dumps(ODD_NAMES, ensure_ascii=False) in (out / "README.md").read_text()
    assert json.loads((out / META_FILE).read_text())["classes"] == ODD_NAMES
    try:
        cc = build.host_compiler()
    except Exception:
        pytest.skip("no C compiler")
    # it compiles, defines no `injected`, and the names read back byte for byte
    obj = tmp_path / "tt_model.o"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-trigraphs", f"-I{out}", "-c",
                    str(out / MODEL_FILE), "-o", str(obj)], check=True, capture_output=True)
    import shutil as sh
    if sh.which("nm"):
        symbols = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
        assert "tt_class_names" in symbols and "injected" not in symbols
    main_c = tmp_path / "names.c"
    main_c.write_text('#include <stdio.h>\nextern const char *const tt_class_names[];\n'
                      f'int main(void) {{ for (int i = 0; i < {len(ODD_NAMES)}; i++) '
                      '{ fputs(tt_class_names[i], stdout); putchar(0); } return 0; }\n')
    exe = tmp_path / "names"
    subprocess.run([cc, "-std=c99", "-trigraphs", "-o", str(exe), str(main_c), str(obj)], check=True,
                   capture_output=True)
    got = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    assert got.split(b"\0")[:-1] == [n.encode() for n in ODD_NAMES]


def test_c_string_escapes_everything_but_plain_printable_ascii():
    from tinytrain.mcu.codegen import c_string, comment_text

    assert c_string("abc 123") == '"abc 123"'
    assert c_string('"') == '"\\""' and c_string("\\") == '"\\\\"' and c_string("?") == '"\\077"'
    assert c_string("\n\x00\u00e9") == '"\\012\\000\\303\\251"'
    assert c_string("\udcff") == '"\\377"'              # an undecodable byte of a file name, as it was
    assert "*/" not in comment_text("a */ b") and "\n" not in comment_text("a\nb")


@pytest.mark.parametrize("plan,message", [
    (None, "no update plan"),
    ({"model": "tiny-test", "kind": "sparse", "resolution": 32, "layers": [], "bias_layers": []}, "empty"),
    ({"model": "tiny-test", "kind": "full", "resolution": 32, "layers": [{"index": 3}], "bias_layers": []},
     "sparse plans only"),
    (dict(TINY_PLAN, optimizer="sgdm"), "not in the C runtime"),
    ({"model": "tiny-test", "kind": "sparse", "resolution": 32, "layers": [{"index": 0, "channels": [1]}],
      "bias_layers": []}, "stem"),
    ({"model": "tiny-test", "kind": "sparse", "resolution": 32, "layers": [{"index": 6, "ratio": 0.5}],
      "bias_layers": []}, "no channel indices"),
])
def test_plans_the_runtime_cannot_run_are_refused(tmp_path, capsys, plan, message):
    model = save_model(tmp_path / "model", plan, method="none" if plan is None else "tinytrain")
    out = tmp_path / "c"
    assert export(model, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinytrain export: error:") and message in err
    assert not out.exists()


def test_an_arena_over_the_device_budget_is_refused(tiny_model, tmp_path, capsys, monkeypatch):
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps({"devices": [{"name": "tiny-mcu", "ram": "16KB", "flash": "64KB"}]}))
    monkeypatch.setenv("TINYTRAIN_DEVICES", str(devices))
    assert export(tiny_model, tmp_path / "c", "--device", "tiny-mcu") == 2
    assert export(tiny_model, tmp_path / "c2", "--device", "mcu-1mb") == 0
    err = capsys.readouterr().err
    assert "the arena needs" in err and "tiny-mcu" in err and "--resolution" in err
    assert not (tmp_path / "c").exists()


def test_bench_images_hold_out_one_image_per_class_when_no_query_is_given(tiny_model, tmp_path):
    from tinytrain.mcu.bench import bench_images
    from tinytrain.mcu.export import prepare

    from .conftest import frames, write_folder

    imgs, labels = frames(7, 40, 3)              # 3 + 2 + 2 images; frames are resized to 32 px
    support = write_folder(tmp_path / "s", imgs, labels, ["a", "b", "c"])
    train, train_labels, test, test_labels, source = bench_images(prepare(tiny_model), str(support), None, tmp_path)
    assert train.shape == (4, 32, 32, 3) and train.dtype == np.uint8 and test.shape == (3, 32, 32, 3)
    assert sorted(test_labels.tolist()) == [0, 1, 2] and sorted(train_labels.tolist()) == [0, 0, 1, 2]
    assert "held out: the last image of each class" in source
    (support / "zebra").mkdir()
    (support / "zebra" / "0.png").write_bytes((support / "a" / "0.png").read_bytes())
    with pytest.raises(ValueError, match="not the model's classes"):
        bench_images(prepare(tiny_model), str(support), None, tmp_path)


def test_sample_photographs_are_written_as_class_folders(tmp_path):
    pytest.importorskip("skimage")
    from tinytrain.mcu.samples import write_samples

    s, q = write_samples(tmp_path / "img", classes=3, support=2, query=1)
    assert sorted(p.name for p in s.iterdir()) == ["astronaut", "chelsea", "coffee"]
    assert all(len(list(d.iterdir())) == 2 for d in s.iterdir()) and all(len(list(d.iterdir())) == 1 for d in q.iterdir())
    with pytest.raises(ValueError, match="not empty"):
        write_samples(tmp_path / "img")


KILLED_EXPORT = """
import os, signal
from pathlib import Path
import tinytrain.deploy.adapted as A
from tinytrain.mcu.export import export_c
out = Path({out!r})
A.exchange_dirs = lambda a, b: False           # a system without RENAME_EXCHANGE: two renames
rename = Path.rename
def killing_rename(self, target):
    rename(self, target)
    if self == out:                             # the earlier export moved aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
Path.rename = killing_rename
export_c({model!r}, out, overwrite=True, lr=0.5)
"""


def test_an_export_killed_between_its_renames_is_recovered_by_the_next_one(tiny_model, tmp_path, capsys):
    """Replacing an earlier C export is two renames where the system cannot exchange folders; a kill between
    them leaves the earlier export whole in a hidden folder, and the next export puts it back first (so
    without --overwrite it is refused as before, nothing lost), then replaces it when asked."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "c"
    assert export(tiny_model, out) == 0
    before = (out / MODEL_FILE).read_text()
    script = tmp_path / "kill.py"
    script.write_text(KILLED_EXPORT.format(out=str(out), model=str(tiny_model)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".c.old-")]
    capsys.readouterr()
    assert export(tiny_model, out) == 2                               # the earlier export is back: refused
    err = capsys.readouterr().err
    assert "restored the C export" in err and "already holds a C export" in err
    assert (out / MODEL_FILE).read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]
    assert export(tiny_model, out, "--overwrite") == 0

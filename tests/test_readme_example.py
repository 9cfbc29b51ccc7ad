"""README's Python example runs as written, on images generated here, and does what it says."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.conftest import COLOURS, write_folder

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_block() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "README's Python API section should hold one python block"
    return blocks[0]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = python_api_block()
    assert len(code.strip().splitlines()) <= 12            # "a ten-line example"
    two = {k: COLOURS[k] for k in ("red", "blue")}
    write_folder(tmp_path / "photos" / "support", 1, two)        # small: the example trains mcunet-5fps
    write_folder(tmp_path / "photos" / "query", 1, two, seed=1)
    write_folder(tmp_path / "photos" / "new", 1, two, seed=2)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    import tinytrain
    assert (tmp_path / "my-model" / "adapted.json").is_file()
    assert out[-1] == f"{tinytrain.__version__} ['blue', 'red']"
    predicted = [line.split() for line in out[1:-1]]
    assert [Path(p[0]).name for p in predicted] == ["0.png", "0.png"] and {p[1] for p in predicted} <= {"blue", "red"}
    again = tinytrain.load_adapted(tmp_path / "my-model")
    with pytest.raises(ValueError, match="overwrite=True"):
        again.save(tmp_path / "my-model")

import json

from tinytrain.cli import main

MiB = 2 ** 20


def test_profile_json_keys(capsys):
    assert main(["profile", "mcunet-5fps", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    for key in ("model", "resolution", "n_conv_layers", "params", "forward_macs", "peak_inference_buffer_bytes",
                "saved_activation_bytes_last_k_blocks", "layers", "methods"):
        assert key in p
    assert p["model"] == "mcunet-5fps" and p["resolution"] == 128 and p["n_conv_layers"] == 42
    assert len(p["saved_activation_bytes_last_k_blocks"]) == 6 and len(p["layers"]) == 42
    assert set(p["methods"]) == {"fulltrain", "lastlayer", "tinytl", "sparseupdate"}
    for m in p["methods"].values():
        assert m["memory_bytes"] > 0 and m["backward_macs"] > 0
    assert p["methods"]["fulltrain"]["batch_size"] == 100 and p["methods"]["sparseupdate"]["batch_size"] == 1
    assert abs(p["methods"]["sparseupdate"]["memory_bytes"] / MiB - 1.43) < 0.03 * 1.43
    assert min(m["memory_ratio"] for m in p["methods"].values()) == 1.0
    assert p["peak_inference_buffer_bytes"] == 640 * 1024


def test_profile_text_sgd_and_device(capsys):
    assert main(["profile", "tiny-test", "--resolution", "32", "--optimizer", "sgd", "--device", "mcu-1mb"]) == 0
    out = capsys.readouterr().out
    assert "FullTrain" in out and "TinyTL" in out and "Table 11" in out and "mcu-1mb" in out
    assert "no published policy" in out   # SparseUpdate is left out for tiny-test, and says so


def test_profile_bad_input(capsys):
    assert main(["profile", "resnet-9000"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["profile", "tiny-test", "--device", "toaster"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_devices_command(capsys):
    assert main(["devices", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)]
    assert "pi-zero-2" in names and "mcu-320kb" in names

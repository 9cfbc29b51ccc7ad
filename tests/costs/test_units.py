import pytest

from tinytrain.costs.units import format_bytes, format_macs, parse_bytes, parse_compute_budget


@pytest.mark.parametrize("text,value", [
    ("1MB", 2 ** 20), ("512KB", 512 * 1024), ("1.5MiB", 1572864), ("1048576", 1048576), ("320 kb", 327680),
    ("2GB", 2 * 2 ** 30), ("100B", 100), (4096, 4096), ("1k", 1024),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["", "MB", "1XB", "-3MB", "one MB", -1])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_parse_compute_budget():
    assert parse_compute_budget("15%") == pytest.approx(0.15)
    assert parse_compute_budget("0.15") == pytest.approx(0.15)
    assert parse_compute_budget("6.5M") == 6_500_000 and isinstance(parse_compute_budget("6.5M"), int)
    assert parse_compute_budget("6500000") == 6_500_000
    assert parse_compute_budget("650K") == 650_000
    for bad in ["0%", "150%", "abc", "-1M", "5X"]:
        with pytest.raises(ValueError):
            parse_compute_budget(bad)


def test_format():
    assert format_bytes(640 * 1024) == "640 KiB"
    assert format_bytes(1.43 * 2 ** 20) == "1.43 MiB"
    assert format_bytes(12) == "12 B"
    assert format_bytes(1049 * 2 ** 20, 4, "MiB") == "1,049 MiB"
    assert format_macs(44_907_008) == "44.9M"
    assert format_macs(590_000) == "590K"

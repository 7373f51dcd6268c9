"""core.fmt: the one place sizes are written for people (binary multiples, KB/MB/GB)."""
from __future__ import annotations

from core.fmt import compact_bytes, fmt_bytes, fmt_used_of, scale


def test_long_form_scales_instead_of_counting_thousands_of_kb():
    assert fmt_bytes(None) == "?" and fmt_bytes(812) == "812 B"
    assert fmt_bytes(2048) == "2.0 KB" and fmt_bytes(3 * 2**20) == "3.0 MB"   # not "3072.0 KB"
    assert fmt_bytes(5 * 2**40) == "5.0 TB" and scale(1023) == (1023.0, "B")


def test_compact_form_fits_a_column():
    for n, text in ((812, "812B"), (9_700, "9.5KB"), (214_000, "209KB"), (1000 * 1024, "1.0MB"), (35_651_584, "34MB")):
        assert compact_bytes(n) == text, n
    assert compact_bytes(None) == "–" and compact_bytes(9_700, letter=True) == "9.5K"
    assert max(len(compact_bytes(n)) for n in range(0, 10 ** 13, 7_777_777_777)) <= 5


def test_a_part_of_a_whole_in_the_whole_unit():
    assert fmt_used_of(2 * 2**30, 8 * 2**30) == "2.0/8.0 GB"
    assert fmt_used_of(300 * 2**20, 512 * 2**20) == "300.0/512.0 MB"

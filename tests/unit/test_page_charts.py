"""The staff page: which counts its accuracy chart plots, and the report lines."""

from __future__ import annotations

from rfidd.web.page import accuracy_points, items_chart


def _count(started: float, expected: int, found: int) -> dict[str, object]:
    return {"started_at": started, "totals": {"expected": expected, "found": found}}


def test_a_count_that_expected_nothing_is_not_plotted_as_zero() -> None:
    # newest first, as the count list is: a count of two zones, then the go-live take-over
    # (310 items found, none expected: it put them on the books)
    rows = [_count(200.0, 95, 94), _count(100.0, 0, 0), {"started_at": 50.0, "totals": None}]
    assert accuracy_points(rows) == [(200.0, 98.9)]


def test_the_last_counts_oldest_first() -> None:
    rows = [_count(float(t), 10, t % 11) for t in range(20, 0, -1)]
    pts = accuracy_points(rows, last=3)
    assert [t for t, _ in pts] == [18.0, 19.0, 20.0]
    assert pts[-1] == (20.0, 90.0)


def test_a_report_line_names_size_and_colour_like_the_live_list() -> None:
    from types import SimpleNamespace

    from rfidd.web.page import report_line

    products = {"03760001001044": SimpleNamespace(size="", colour="bordeaux")}
    line = report_line({"epc": "3034E57E04001A00000003F3", "gtin": "03760001001044",
                        "name": "Pochette Aube", "zone": "exit"}, products)
    assert (line["name"], line["colour"], line["zone"]) == ("Pochette Aube", "bordeaux", "exit")
    unknown = report_line({"epc": "E1", "gtin": None, "name": None, "sku": "X-1"}, products)
    assert (unknown["name"], unknown["size"], unknown["colour"]) == ("X-1", "", "")


def test_the_shrinkage_axis_counts_whole_items() -> None:
    from rfidd.web.page import item_axis

    assert item_axis(0) == [0, 1]
    assert item_axis(1) == [0, 1]
    assert item_axis(7) == list(range(8))
    assert item_axis(35) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]


def test_a_shrinkage_chart_with_no_loss_yet_renders() -> None:
    # a new site: no loss in any of the weeks (pygal raised on the whole-item axis)
    svg = items_chart("Shrinkage", ["23 Nov", "30 Nov"], {}, unit="items").render(is_unicode=True)
    assert "<svg" in svg and "No data" in svg
    drawn = items_chart("Shrinkage", ["23 Nov", "30 Nov"], {"exit": [0, 2]}, unit="items").render(
        is_unicode=True)
    assert "30 Nov" in drawn


def test_charts_name_their_unit_and_no_data_is_not_a_headline() -> None:
    """The y axis says what it counts (items? EUR?), and "No data" is drawn at the size of
    the chart's text, not in 64 px type across the grid."""
    import re

    svg = items_chart("Shrinkage", ["23 Nov", "30 Nov"], {}, unit="items lost").render(
        is_unicode=True)
    assert "items lost" in svg
    sizes = [int(s) for s in re.findall(r"\.no_data\s*\{[^}]*font-size:\s*(\d+)", svg)]
    assert sizes and max(sizes) <= 16, sizes

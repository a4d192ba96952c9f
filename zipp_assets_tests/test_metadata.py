from zipp_assets.metadata import markdown_table


def test_markdown_table_escapes_untrusted_text_and_shows_missing_values():
    rows = [{"name": "a|b\nc `code`", "value": float("nan"), "other": None}, {"name": "x" * 100, "value": 0.123456, "other": 3}]
    table = markdown_table(rows, max_chars=20)
    lines = table.splitlines()
    assert lines[0] == "| name | value | other |"
    assert "a\\|b c 'code'" in lines[2] and "| - | - |" in lines[2]
    assert "…" in lines[3] and "0.1235" in lines[3]
    assert markdown_table([]) == "_(no rows)_"
    assert "1 more rows" in markdown_table([{"a": i} for i in range(3)], max_rows=2)

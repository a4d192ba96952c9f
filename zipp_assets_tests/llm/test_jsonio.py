"""JSON out of model text: fences, prose around an object, light repairs, schema validation."""

from __future__ import annotations

import pytest

from zipp_assets.llm.jsonio import check_schema, extract_json, parse_output, validate

SCHEMA = {"type": "object", "required": ["name", "tags"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}}


@pytest.mark.parametrize("text, expected", [
    ('{"name": "Ann", "tags": []}', {"name": "Ann", "tags": []}),
    ('Sure!\n```json\n{"name": "Ann", "tags": ["a"]}\n```\nAnything else?', {"name": "Ann", "tags": ["a"]}),
    ('The persona is {"name": "Ann {the} gardener", "tags": []} as asked. {"other": 1}',
     {"name": "Ann {the} gardener", "tags": []}),
    ('{"name": "Ann", "tags": ["a", "b",],}', {"name": "Ann", "tags": ["a", "b"]}),
    ("{'name': 'Ann\\'s', 'tags': ['x']}", {"name": "Ann's", "tags": ["x"]}),
    ('{"name": "it\'s \\"quoted\\"", "ok": True, "none": None}', {"name": 'it\'s "quoted"', "ok": True, "none": None}),
])
def test_extracts_and_repairs(text, expected):
    assert extract_json(text) == (expected, None)


@pytest.mark.parametrize("text, reason", [
    ("I cannot help with that.", "no JSON object in the output"),
    ("[1, 2, 3]", "no JSON object in the output"),
    ("{this is not: json at all}", "output is not valid JSON, even after repair"),
    # Cut off by the token limit: never repaired into an answer (old code closed it: a locale of "Lis").
    ('{"name": "Ann", "tags": ["a", "b', "truncated: the output ends before its JSON object closes"),
    ('{"name": "Ann", "locale": "Lis', "truncated: the output ends before its JSON object closes"),
    ('Here it is: {"name": "Ann", "tags": []', "truncated: the output ends before its JSON object closes"),
])
def test_reports_why_nothing_was_found(text, reason):
    value, why = extract_json(text)
    assert value is None and why.startswith(reason)


def test_validation_names_the_violation_and_where():
    assert validate({"name": "Ann", "tags": ["a"]}, SCHEMA) is None
    assert validate({"name": "Ann", "tags": [3]}, SCHEMA) == "schema violation at tags/0: 3 is not of type 'string'"
    assert validate({"name": "Ann"}, SCHEMA).startswith("schema violation at (root): 'tags' is a required property")
    assert parse_output('{"name": "Ann", "tags": [], "extra": 1}', SCHEMA)[1].startswith("schema violation")
    assert parse_output('{"name": "Ann", "tags": []}', SCHEMA) == ({"name": "Ann", "tags": []}, None)
    assert parse_output('{"anything": 1}', None) == ({"anything": 1}, None)
    assert validate({}, {"type": "no-such-type"}).startswith("invalid schema: ")


def test_a_malformed_schema_is_caught():
    check_schema(SCHEMA)
    with pytest.raises(Exception, match="is not valid under any of the given schemas"):
        check_schema({"type": "no-such-type"})

"""Tests for importer.schema: loading, messages that name file and key, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from importer.errors import SchemaError
from importer.schema import Schema, json_schema_text, load_schema

ROOT = Path(__file__).resolve().parent.parent


def test_json_schema_file_is_current() -> None:
    """schemas/schema.json is what the model generates (run `make schema-json` if not)."""
    assert (ROOT / "schemas" / "schema.json").read_text() == json_schema_text()


@pytest.mark.parametrize("path", sorted((ROOT / "schemas").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_schema_loads(path: Path) -> None:
    """Each schema file in schemas/ is valid."""
    assert isinstance(load_schema(path), Schema)


def test_dict_and_object_load_the_same(schema: dict[str, Any]) -> None:
    """A dict and the Schema built from it are the same schema."""
    loaded = load_schema(schema)
    assert load_schema(loaded) is loaded
    assert loaded.fingerprint() == load_schema(dict(schema)).fingerprint()


def test_fingerprint_changes_with_what_is_sent(schema: dict[str, Any]) -> None:
    """Changing the scale changes the fingerprint; the description does not."""
    before = load_schema(schema).fingerprint()
    assert load_schema({**schema, "description": "x"}).fingerprint() == before
    schema["value"]["scale"] = 1000
    assert load_schema(schema).fingerprint() != before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"user_id": {"column": "user", "hsh": "sha256"}},
            "schema: key 'user_id.hsh': unknown key; this table takes: column, value, extract, "
            "hash, salt_env, allow_email, normalize",
            id="unknown-key",
        ),
        pytest.param(
            {"project_id": {"value": "evil.com/"}},
            "schema: key 'project_id': 'value' must be ASCII digits only, got 'evil.com/'",
            id="hostile-project-constant",
        ),
        pytest.param(
            {"project_id": {"value": "\uff11\uff12\uff13"}},
            "schema: key 'project_id': 'value' must be ASCII digits only, got '\uff11\uff12\uff13'",
            id="fullwidth-digits",
        ),
        pytest.param(
            {"event_name": {"column": "event", "value": "buy"}},
            "schema: key 'event_name': give exactly one of 'column' or 'value'",
            id="column-and-value",
        ),
        pytest.param(
            {"time": {"column": "ts", "timezone": "Mars/Olympus"}},
            "schema: key 'time': unknown IANA time zone 'Mars/Olympus' (e.g. 'America/New_York')",
            id="bad-zone",
        ),
        pytest.param(
            {"value": {"column": "amount", "scale": 0}},
            "schema: key 'value.scale': Input should be greater than or equal to 1 (got 0)",
            id="zero-scale",
        ),
        pytest.param(
            {"time": {"column": "ts", "epoch_unit": "minutes"}},
            "schema: key 'time.epoch_unit': Input should be 'auto', 's', 'ms', 'us' or 'ns' "
            "(got 'minutes')",
            id="bad-unit",
        ),
        pytest.param(
            {"endpoint": "ftp://x/{project_id}"},
            "schema: 'endpoint' must be an http(s) URL, got 'ftp://x/{project_id}'",
            id="bad-endpoint",
        ),
        pytest.param(
            {"experiments": []},
            "schema: give 'experiments' or 'buckets': every event needs an experiment",
            id="no-experiment",
        ),
        pytest.param(
            {"kind": "impression"},
            "schema: an impression schema sets g to the experiment id: drop 'goal_ids'",
            id="impression-with-goals",
        ),
    ],
)
def test_mistakes_name_the_key(
    schema: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    """Each mistake gets one message naming the key and what is wrong."""
    with pytest.raises(SchemaError) as caught:
        load_schema({**schema, **change})
    assert str(caught.value) == message


def test_missing_key_names_it(schema: dict[str, Any]) -> None:
    """A schema without a time says so."""
    del schema["time"]
    with pytest.raises(SchemaError, match=r"key 'time': missing; add it"):
        load_schema(schema)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    """TOML syntax errors and missing files name the file."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[user_id\ncolumn = 1\n")
    with pytest.raises(SchemaError, match=r"^.*bad\.toml: not valid TOML: "):
        load_schema(bad)
    with pytest.raises(SchemaError, match=r"nope\.toml: file not found"):
        load_schema(tmp_path / "nope.toml")


def test_several_mistakes_are_all_listed(schema: dict[str, Any], tmp_path: Path) -> None:
    """Every wrong key is listed, under the file's name."""
    path = tmp_path / "s.toml"
    path.write_text(
        '[project_id]\nvalue = "x"\n[account_id]\nvalue = "1"\n[user_id]\ncolumn = "u"\n'
        '[event_name]\nvalue = "e"\n[time]\ncolumn = "t"\ncolour = "red"\n'
        '[[experiments]]\nexperiment = "1"\nvariation = "2"\n'
    )
    with pytest.raises(SchemaError) as caught:
        load_schema(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: \n")
    assert "key 'project_id': 'value' must be ASCII digits only, got 'x'" in text
    assert "key 'time.colour': unknown key" in text


def test_salt_env_must_be_set(schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A salt variable that is not set is a schema error, raised before anything is read."""
    schema["user_id"] = {"column": "user", "hash": "sha256", "salt_env": "TEST_SALT_X"}
    monkeypatch.delenv("TEST_SALT_X", raising=False)
    with pytest.raises(SchemaError, match="environment variable TEST_SALT_X is not set"):
        load_schema(schema).fingerprint()
    monkeypatch.setenv("TEST_SALT_X", "pepper")
    first = load_schema(schema).fingerprint()
    monkeypatch.setenv("TEST_SALT_X", "other")
    assert load_schema(schema).fingerprint() != first


def test_json_schema_lists_every_top_level_key() -> None:
    """The generated JSON Schema documents each top-level key of the model."""
    generated = json.loads(json_schema_text())
    assert set(generated["properties"]) == set(Schema.model_fields)

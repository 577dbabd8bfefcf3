"""Tests for importer.encode: percent-encoding, order, and the vectorized path."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer import encode

from .conftest import SPEC_QUERY

SPEC_PARAMS = [
    ("a", "1234567"),
    ("n", "example_event"),
    ("u", "1316548451038r0"),
    ("x87654321", "1111111"),
    ("v", "500"),
    ("g", "1234567"),
    ("d", "8511325"),
    ("s983745985", "gc"),
    ("time", "1462472175"),
]
HOSTILE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("&=#%+ ?/;\r\n\x00\t'\"<>")), st.characters(exclude_categories=("Cs",))
    ),
    max_size=40,
)


def test_spec_example_encodes_to_the_spec_query() -> None:
    """The spec's example parameters give exactly the spec's example query."""
    url = encode.encode_event("http://{project_id}.log.optimizely.com/event", SPEC_PARAMS)
    assert url == f"http://1234567.log.optimizely.com/event?{SPEC_QUERY}"


def test_parameters_are_put_in_canonical_order() -> None:
    """Whatever order they come in, parameters leave in the spec example's order."""
    shuffled = list(reversed(SPEC_PARAMS))
    assert encode.encode_query(shuffled) == SPEC_QUERY


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        pytest.param("buy&v=999", "buy%26v%3D999", id="ampersand-equals"),
        pytest.param("a b+c", "a%20b%2Bc", id="space-plus"),
        pytest.param("50%#frag", "50%25%23frag", id="percent-hash"),
        pytest.param("café", "caf%C3%A9", id="non-ascii"),
        pytest.param("A-z_0.9~", "A-z_0.9~", id="unreserved-kept"),
    ],
)
def test_quote_encodes_every_reserved_character(text: str, encoded: str) -> None:
    """Reserved characters are percent-encoded; unreserved ones are kept."""
    assert encode.quote(text) == encoded


def test_goal_ids_keep_their_commas() -> None:
    """g=12345,4324234 as in the spec: commas stay literal in g only."""
    query = encode.encode_query([("g", "12345,4324234"), ("n", "a,b")])
    assert query == "n=a%2Cb&g=12345,4324234"


@settings(max_examples=300, deadline=None)
@given(name=HOSTILE, user=HOSTILE, segment=HOSTILE)
def test_decoding_gives_back_exactly_the_parameters(name: str, user: str, segment: str) -> None:
    """A standard parser recovers every value exactly, and no value adds a parameter."""
    params = [
        ("a", "1"),
        ("n", name),
        ("u", user),
        ("x1", "2"),
        ("d", "3"),
        ("s9", segment),
        ("time", "4"),
    ]
    url = encode.encode_event("https://{project_id}.log.optimizely.com/event", params)
    parts = urlsplit(url)
    assert parts.hostname == "1.log.optimizely.com"
    assert parts.fragment == ""
    decoded = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    assert decoded == params


@settings(max_examples=200, deadline=None)
@given(values=st.lists(HOSTILE, min_size=1, max_size=20))
def test_vectorized_quote_matches_the_reference(values: list[str]) -> None:
    """quote_array gives the same text as quote, value by value."""
    result = encode.quote_array(pa.array(values, pa.string())).to_pylist()
    assert result == [encode.quote(v) for v in values]


def test_concat_leaves_out_null_pieces() -> None:
    """A null optional piece adds nothing; constants fold."""
    values = pa.array(["5", None])
    out = encode.concat(["a=1", encode.optional("&v=", values), "&d=2"], 2)
    assert out.to_pylist() == ["a=1&v=5&d=2", "a=1&d=2"]


def test_url_pieces_put_the_project_id_in_the_host() -> None:
    """The {project_id} template gives a per-row host."""
    project = pa.array(["11", "22"])
    out = encode.concat([*encode.url_pieces("https://{project_id}.example/e", project), "a=1"], 2)
    assert out.to_pylist() == ["https://11.example/e?a=1", "https://22.example/e?a=1"]

"""Event parameters to request URLs. Pure: no I/O, no state.

Every value is percent-encoded (RFC 3986 unreserved characters kept), so no cell can add or
change a parameter: ``buy&v=999`` stays one event name. ``g`` keeps its commas literal as
in the spec. Parameters go in the spec example's order: a, n, u, x…, v, g, d, s…, time.

:func:`encode_event` encodes one event and is the reference; :func:`event_urls` builds the
URLs of whole Arrow columns of parameters, quoting each distinct value once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias
from urllib.parse import quote as _quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARAM_ORDER = ("a", "n", "u", "x", "v", "g", "d", "s", "time")
# How event_urls takes each parameter. Free text is quoted there; the others come URL-safe:
# digits and commas the mapping checked, or, for x and s, whole fragments that carry their
# own names ("x1=2&x3=4", "s9=a%20b").
_QUOTED = frozenset({"n", "u"})
_FRAGMENTS = frozenset({"x", "s"})
_OPTIONAL = frozenset({"v", "g", "s"})  # left out of a URL where null
_SAFE_TEXT = r"^[A-Za-z0-9_.~-]*$"
# A per-row column of text, a constant for every row, or nothing (the parameter is left out).
Piece: TypeAlias = "pa.Array | str | None"


def quote(text: str, *, safe: str = "") -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (and ``safe``)."""
    return _quote(text, safe=safe)


def order_key(name: str) -> int:
    """Where a parameter goes in the canonical order (x… and s… by their prefix)."""
    if name in ("a", "n", "u", "v", "g", "d", "time"):
        return PARAM_ORDER.index(name)
    if name.startswith("x"):
        return PARAM_ORDER.index("x")
    if name.startswith("s"):
        return PARAM_ORDER.index("s")
    raise ValueError(f"not an Event API parameter: {name!r}")


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """Encode (name, value) pairs in canonical order (stable among x… and s…)."""
    ordered = sorted(params, key=lambda pair: order_key(pair[0]))
    return "&".join(
        f"{quote(name)}={quote(value, safe=',' if name == 'g' else '')}" for name, value in ordered
    )


def endpoint_url(endpoint: str, project_id: str) -> str:
    """The endpoint template with ``{project_id}`` filled in."""
    return endpoint.replace("{project_id}", project_id)


def encode_event(endpoint: str, params: Sequence[tuple[str, str]]) -> str:
    """The full URL of one event: the reference the vectorized path must match.

    Args:
        endpoint: a template such as ``https://{project_id}.log.optimizely.com/event``.
        params: (name, value) pairs; ``a`` must be among them when the template needs it.
    """
    project = next((value for name, value in params if name == "a"), "")
    return f"{endpoint_url(endpoint, project)}?{encode_query(params)}"


def quote_array(values: pa.Array, *, safe: str = "") -> pa.Array:
    """:func:`quote` for a string column, calling Python once per distinct unsafe value."""
    pattern = _SAFE_TEXT if not safe else _SAFE_TEXT.replace("~-", "~" + safe + "-")
    plain = pc.fill_null(pc.match_substring_regex(values, pattern), True)
    if pc.all(plain).as_py():
        return values
    mask = pc.invert(plain)
    unsafe = pc.filter(values, mask).dictionary_encode()
    quoted = pa.array([quote(v, safe=safe) for v in unsafe.dictionary.to_pylist()], pa.string())
    return pc.replace_with_mask(values, mask, quoted.take(unsafe.indices))


def optional(prefix: str, values: Piece) -> Piece:
    """``prefix + value`` per row; a null value stays null, so :func:`concat` leaves it out."""
    if values is None or isinstance(values, str):
        return None if values is None else prefix + values
    return pc.binary_join_element_wise(prefix, values, "")


def concat(pieces: Sequence[Piece], size: int) -> pa.Array:
    """Concatenate pieces row by row in one pass; None and null pieces add nothing.

    Neighbouring constants are folded first: each piece costs a pass over every row.
    """
    merged: list[pa.Array | str] = []
    for piece in pieces:
        if piece is None:
            continue
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + piece
        else:
            merged.append(piece)
    if all(isinstance(p, str) for p in merged):
        return pa.repeat(pa.scalar("".join(str(p) for p in merged)), size)
    return pc.binary_join_element_wise(*merged, "", null_handling="replace", null_replacement="")


def join_present(pieces: Sequence[Piece], separator: str, size: int) -> pa.Array:
    """Join the non-null pieces of each row with ``separator``; "" when none is present.

    Not ``binary_join_element_wise(null_handling="skip")``: pyarrow 26 drops the rows where
    every piece is null, returning a shorter array.
    """
    joined = concat([optional(separator, piece) for piece in pieces], size)
    return pc.utf8_slice_codeunits(joined, len(separator))


def event_urls(endpoint: str, params: Mapping[str, Piece], size: int) -> pa.Array:
    """The URL of each of ``size`` events: :func:`encode_event` over whole columns.

    Args:
        endpoint: the template; a per-row ``a`` gives each row its own host.
        params: a piece for each name of PARAM_ORDER (other names are not read).
        size: the number of events.
    """
    pieces = url_pieces(endpoint, params["a"])
    for index, name in enumerate(PARAM_ORDER):
        value = _quoted(params[name]) if name in _QUOTED else params[name]
        prefix = ("&" if index else "") + ("" if name in _FRAGMENTS else f"{name}=")
        if name in _OPTIONAL:
            pieces.append(optional(prefix, value))
        else:
            pieces += [prefix, value]
    return concat(pieces, size)


def _quoted(piece: Piece) -> Piece:
    if piece is None or isinstance(piece, str):
        return None if piece is None else quote(piece)
    return quote_array(piece)


def url_pieces(endpoint: str, project: Piece) -> list[Piece]:
    """The pieces of ``scheme://host/path?`` for each row (per-row host with {project_id})."""
    parts = endpoint.split("{project_id}")
    if len(parts) == 1 or isinstance(project, str):
        return [endpoint_url(endpoint, project if isinstance(project, str) else "") + "?"]
    pieces: list[Piece] = [parts[0]]
    for tail in parts[1:]:
        pieces += [project, tail]
    pieces.append("?")
    return pieces


def lengths(values: pa.Array) -> np.ndarray:
    """UTF-8 byte length of each string."""
    result: np.ndarray = pc.binary_length(values).to_numpy(zero_copy_only=False)
    return result

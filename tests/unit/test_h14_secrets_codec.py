"""Hardening #14: masking works on values and streams, not on encoded text; NaN is refused;
control characters are rendered visibly."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

from durapipe import _console, _secrets, _serde
from durapipe.errors import SerializationError

PEM = '-----BEGIN TEST KEY-----\nq"uote\\back-Zk81Lm\nMIIEvQ-second-7f3a\n-----END TEST KEY-----'


@pytest.fixture
def known(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(_secrets, "_KNOWN", set())
    monkeypatch.setattr(_secrets, "_FORMS", [])
    monkeypatch.setenv("DP_UNIT_PEM", PEM)
    yield _secrets.secret("DP_UNIT_PEM").reveal()


def test_encoded_values_hold_no_form_of_the_secret(known: str) -> None:
    value = {
        "raw": f"a {known} b",
        "as_json": json.dumps({"k": known}),
        "json_in_json": json.dumps(json.dumps(known)),
        "repr": repr(known),
        known: [known, 1],
    }
    text = _serde.dumps(value)
    for form in (known, json.dumps(known)[1:-1], repr(known)[1:-1], known[:20], known[-20:]):
        assert form not in text
    decoded = json.loads(text)
    assert decoded["raw"] == "a *** b" and decoded["***"] == ["***", 1]


def test_masking_json_text_never_breaks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # `n"abc` escaped is `n\"abc`, which the encoding of newline + `"abc` holds across the
    # escape `\n`, though the value holds no secret: masking the text would leave `\***`.
    monkeypatch.setattr(_secrets, "_KNOWN", set())
    monkeypatch.setattr(_secrets, "_FORMS", [])
    monkeypatch.setenv("DP_UNIT_TRICKY", 'n"abc')
    _secrets.secret("DP_UNIT_TRICKY")
    value = {"v": '\n"abc', "w": 'n"abc'}
    assert json.loads(_serde.dumps(value)) == {"v": '\n"abc', "w": "***"}


def test_a_stream_cut_anywhere_is_masked_as_a_whole(known: str) -> None:
    stream = ("line one\n" + "x" * 50 + known + "\nafter " + known + " end\n" + known[:10]) * 4
    rng = random.Random(14)
    for _ in range(300):
        mask, out, i = _secrets.StreamMask(), [], 0
        while i < len(stream):
            n = rng.randint(1, 60)
            out.append(mask.feed(stream[i : i + n]))
            i += n
        out.append(mask.end())
        assert "".join(out) == stream.replace(known, "***")


def test_a_held_part_keeps_lines_whole(known: str) -> None:
    mask = _secrets.StreamMask()
    first = "ok\n" + known[: known.index("\n") + 1]  # whole lines, the last the key's first
    assert mask.feed(first) == "ok\n"  # the key's first line waits for the rest
    assert mask.feed(known[known.index("\n") + 1 :] + "\nnext\n") == "***\nnext\n"


def test_non_finite_floats_are_refused_and_named() -> None:
    for bad in (float("nan"), float("inf"), {"a": [-float("inf")]}):
        with pytest.raises(SerializationError, match="the result of step s_1 .* not finite"):
            _serde.dumps(bad, what="the result of step s_1")
    assert _serde.parse_cli_value("NaN") == "NaN"
    assert _serde.parse_cli_value("-Infinity") == "-Infinity"
    assert _serde.parse_cli_value("1.5") == 1.5


def test_control_characters_are_rendered_visibly() -> None:
    fmt = _console.LineFormatter(timestamps=False)
    text = fmt.format(prefix="p", line="a\x1b[2J\tb\x07\x7f\x9b\x00c\nd\re", stream="out", at=0)
    assert text.endswith("a\\x1b[2J\tb\\x07\\x7f\\x9b\\x00c\n[p" + " " * 19 + "] d\\x0de")

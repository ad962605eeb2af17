"""Exact messages for representative bad lines.

ledger/input/reader.py rewrites msgspec's English error messages with regular expressions; if a
msgspec release rewords them, these exact strings change and this test fails, instead of
users silently getting worse messages (pyproject.toml pins the tested msgspec range).
"""

from __future__ import annotations

import pytest

from ledger.input.reader import parse_line

P = ('{"type":"ProtocolIssued","election":"e","occurred_at":"2030-04-07T20:00:00Z","station":"s",'
     '"reported_by":"r","ballots_cast":1,"invalid":0,"votes":{"a":1}%s}')
D = ('{"type":"ElectionDefined","election":"e","occurred_at":"2030-04-07T20:00:00Z","name":"n",'
     '"seats":3,"method":"dhondt","authority":"a","choices":[{"id":"a","name":"A"}]}')

TABLE = [
    # msgspec: "Object contains unknown field `colour`"
    (P % ',"colour":"red"', "colour: unknown field"),
    # "Object missing required field `reported_by`"
    (P.replace('"reported_by":"r",', "") % "", "reported_by: required field is missing"),
    (D.replace('"name":"A"', '"x":1').replace(',"x":1', ""), "choices.0.name: required field is missing"),
    ('{"election":"e"}', "type: required field is missing"),
    # "... - at `key` in `$.votes`"
    (P.replace('{"a":1}', '{"":1}') % "", 'votes: a key contains control characters, is empty or '
     'is longer than 200 characters: ""'),
    # "Number out of range - at `$.votes[...]`"
    (P.replace('{"a":1}', '{"a":1e400}') % "", "votes.a: number out of range"),
    # "Expected `int` >= 0 - at ..." / "<= 1000000000000"
    (P.replace('{"a":1}', '{"a":-5}') % "", "votes.a: expected an integer >= 0, got -5"),
    (P.replace('"ballots_cast":1', '"ballots_cast":1000000000001') % "",
     "ballots_cast: expected an integer <= 1000000000000, got 1000000000001"),
    (D.replace('"seats":3', '"seats":0'), "seats: expected an integer >= 1, got 0"),
    (D.replace('"authority"', '"threshold_pct":101,"authority"'),
     "threshold_pct: expected a number <= 100.0, got 101"),
    # "Expected `int`, got `str`"
    (P.replace('{"a":1}', '{"a":"x"}') % "", "votes.a: expected an integer, got a string"),
    (P.replace('"station":"s"', '"station":5') % "", "station: expected a string, got an integer"),
    ('[1,2]', "expected an object, got a list"),
    ('{"type":"AppealFiled","election":"e","occurred_at":"2030-04-07T20:00:00Z","appeal":"a",'
     '"filed_by":"f","grounds":"g","demand":"recount","stations":[1]}',
     "stations.0: expected a string, got an integer"),
    # "Invalid value 'ProtocolIsued' - at `$.type`"
    (P.replace('"ProtocolIssued"', '"ProtocolIsued"') % "",
     'type: unknown event type "ProtocolIsued"; expected one of ElectionDefined, '
     "StationRegistered, ProtocolIssued, ProtocolWithheld, ResultAnnounced, AppealFiled, "
     "AppealDecided, ReporterRegistered, ReporterKeyRevoked"),
    (D.replace('"dhondt"', '"borda"'), "method: invalid enum value 'borda', got \"borda\""),
    # "Expected `datetime` with a timezone component"
    (P.replace("20:00:00Z", "20:00:00") % "",
     'occurred_at: expected an RFC 3339 timestamp with a UTC offset, got "2030-04-07T20:00:00"'),
    # "Expected `str` matching regex ..."
    (P.replace('"station":"s"', '"station":"a\\u0001"') % "",
     'station: contains control characters or is malformed: "a\\u0001"'),
    (P % ',"document_sha256":"ABC"',
     'document_sha256: contains control characters or is malformed: "ABC"'),
    # "Expected `array` of length >= 1"
    (D.replace('[{"id":"a","name":"A"}]', "[]"), "choices: expected a list of length >= 1, got []"),
    # "JSON is malformed: ..."
    ('{"type":', "malformed JSON: Input data was truncated"),
    ('{"type" 1}', "malformed JSON: expected ':' (byte 8)"),
    ("nope", "malformed JSON: invalid character (byte 4)"),
]


@pytest.mark.parametrize(("text", "message"), TABLE)
def test_bad_lines_get_exactly_these_messages(text: str, message: str) -> None:
    assert str(parse_line(7, text.encode()).problem) == f"line 7: {message}"

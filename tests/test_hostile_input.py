"""Hostile input: the JSON Lines reader and the command line against whatever anyone sends.

Property tests (hypothesis) and a bounded fuzz run over ``ledger.input.reader.read_lines`` /
``parse_line`` and ``ledger.cli.main.main``: random bytes, deep nesting, huge numbers, NaN and
Infinity, invalid UTF-8, enormous lines, timestamps without offsets, ids with control
characters, random argument lists. The outcome is always a clean success for valid input or
exit 2 with one line per problem: never a traceback, never a partial write (events are
counted in the database before and after).

The limits (``MAX_LINE_BYTES``, ``MAX_BATCH_LINES``) are tested on generator-backed streams,
never a file in memory.

By default every property runs a fixed, derandomised set of examples (reproducible in CI).
LEDGER_TEST_FUZZ_EXAMPLES=N runs N random examples per property instead (a long fuzz run).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.cli.main import build_parser, main
from ledger.input.reader import MAX_BATCH_LINES, MAX_LINE_BYTES, InputTooLarge, parse_line, read_lines
from tests.conftest import Regression
from tests.test_crash import ROOT, SEED, bench_module

EXAMPLES = int(os.environ.get("LEDGER_TEST_FUZZ_EXAMPLES", "0"))
SAMPLE = ROOT / "ledger" / "samples" / "council-2030.jsonl"
SAMPLE_EVENTS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def fuzz(default: int) -> Any:
    """Hypothesis settings: ``default`` fixed examples, or LEDGER_TEST_FUZZ_EXAMPLES random."""
    return settings(
        max_examples=EXAMPLES or default, deadline=None, derandomize=not EXAMPLES,
        database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def one_line_problem(line: Any, number: int) -> str:
    assert (line.event is None) != (line.problem is None)
    text = str(line.problem)
    assert len(text.splitlines()) == 1 and "\x1b" not in text, text
    assert text.startswith(f"line {number}: "), text
    return text


# --- hostile lines ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)
CONTROL = [chr(c) for c in [*range(0x20), 0x7F]]
RAW_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 400, b"0x10",
              b"01", b"1.", b"+1", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"[" * 5000,
              b"{\"a\":" * 3000, b"\"\\ud800\"", b"\"\\u0000\"", b"\"\xe2\x80\xa8\""]


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """A line of the bundled sample, broken in one of the ways an attacker would try."""
    event = dict(draw(st.sampled_from(SAMPLE_EVENTS)))
    how = draw(st.sampled_from(["value", "raw", "id", "time", "field", "drop", "bytes", "nest"]))
    key = draw(st.sampled_from(sorted(event)))
    if how == "value":
        event[key] = draw(json_values)
    elif how == "id":
        event[key] = draw(st.text(max_size=5)) + draw(st.sampled_from(CONTROL)) + "x"
    elif how == "time":
        event["occurred_at"] = draw(st.sampled_from([
            "2030-04-07T20:00:00", "2030-04-07 20:00:00+02:00", "2030-02-30T20:00:00Z",
            "2030-04-07T20:00:00+25:00", "20300407T200000Z", "", "now", "2030-04-07T20:00:00z",
        ]))
    elif how == "field":
        event[draw(st.text(max_size=6)) + draw(st.sampled_from(["\n", "`", " - at `$.x`", "\x85"]))] = 1
    elif how == "drop":
        del event[key]
    text = json.dumps(event, ensure_ascii=draw(st.booleans())).encode()
    if how == "raw":
        text = text.replace(json.dumps(event[key]).encode(), draw(st.sampled_from(RAW_TOKENS)), 1)
    elif how == "bytes":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    elif how == "nest":
        depth = draw(st.integers(1, 20_000))
        text = text[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    return text


@given(st.binary(max_size=400))
@fuzz(1000)
def test_any_bytes_are_an_event_or_one_line_problem(data: bytes) -> None:
    line = parse_line(7, data)
    if line.problem is not None:
        one_line_problem(line, 7)


@given(hostile_lines())
@fuzz(1500)
def test_a_broken_event_is_one_line_problem_naming_its_line(text: bytes) -> None:
    line = parse_line(12, text)
    if line.problem is not None:
        one_line_problem(line, 12)


@given(st.lists(st.one_of(hostile_lines(), st.binary(max_size=60), st.just(b""), st.just(b"  ")),
                max_size=12))
@fuzz(150)
def test_read_lines_numbers_every_line_and_skips_only_blank_ones(lines: list[bytes]) -> None:
    stream = io.BytesIO(b"\n".join(lines))
    numbers = []
    for line in read_lines(stream):
        numbers.append(line.number)
        if line.problem is not None:
            one_line_problem(line, line.number)
    physical = b"\n".join(lines).split(b"\n")
    # A byte order mark opening the input is not content (Excel writes one): docs/events.md.
    physical[0] = physical[0].removeprefix(b"\xef\xbb\xbf")
    expected = [n for n, raw in enumerate(physical, start=1) if raw.strip()]
    assert numbers == expected


E = '{"type":"StationRegistered","election":"e","occurred_at":"2030-04-01T12:00:00+02:00",' \
    '"station":"s","region":"r","registered_voters":%s}'


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 100_000 + "]" * 100_000, "line 3: expected an object, got a list"),
    ('{"type":' + "[" * 100_000 + "]" * 100_000 + "}", "line 3: malformed JSON: nested too deeply"),
    (E % ("[" * 5_000 + "]" * 5_000), "line 3: registered_voters: expected an integer or null, "
     "got a list"),
    ('{"type":"StationRegistered","election":"e","occurred_at":"2030-04-01T12:00:00Z","x":'
     + "[" * 100_000 + "]" * 100_000 + "}", "line 3: x: unknown field"),
    (E % "1e400", "line 3: registered_voters: number out of range"),
    (E % ("9" * 400), "line 3: registered_voters: expected an integer <= 1000000000000"),
    (E % "NaN", "line 3: malformed JSON: invalid character"),
    (E % "Infinity", "line 3: malformed JSON: invalid character"),
    (E % "-Infinity", "line 3: malformed JSON: invalid character"),
    (E % "1.5", "line 3: registered_voters: expected an integer or null, got a number"),
    ((E % "1").encode().replace(b'"s"', b'"\xff"'), "line 3: not valid UTF-8 (byte 97)"),
    ((E % "1").encode().replace(b'"s"', b'"\xed\xa0\x80"'), "line 3: not valid UTF-8 (byte 97)"),
    ((E % "1").encode() + b"\xff", "line 3: not valid UTF-8 (byte 135)"),
    ((E % "1").replace("+02:00", ""), "line 3: occurred_at: expected an RFC 3339 timestamp "
     'with a UTC offset, got "2030-04-01T12:00:00"'),
    ((E % "1").replace('"s"', '"s\\u0007"'), "line 3: station: contains control characters"),
    ((E % "1").replace('"s"', '"s\\nline 4: forged"'),
     'line 3: station: contains control characters or is malformed: "s\\nline 4: forged"'),
    ((E % "1").replace('"station"', '"x\\ny":1,"station"'), "line 3: x\\u000ay: unknown field"),
    ((E % "1").replace('"station"', '"\\u2028":1,"station"'), "line 3: \\u2028: unknown field"),
    ('{"type":"ProtocolIssued","election":"e","occurred_at":"2030-04-01T12:00:00Z","station":"s",'
     '"reported_by":"r","registered_voters":null,"ballots_issued":null,"ballots_cast":1,'
     '"invalid":0,"votes":{"a\\u001b[2J":1}}',
     'line 3: votes: a key contains control characters, is empty or is longer than 200 '
     'characters: "a\\u001b[2J"'),
    ('{"type":"ProtocolIssued","election":"e","occurred_at":"2030-04-01T12:00:00Z","station":"s",'
     '"reported_by":"r","registered_voters":null,"ballots_issued":null,"ballots_cast":1,'
     '"invalid":0,"votes":{"a":1,"b":1e400}}', "line 3: votes.b: number out of range"),
    ('{"type":"AppealFiled","election":"e","occurred_at":"2030-04-01T12:00:00Z","appeal":"a",'
     '"filed_by":"f","grounds":"g","demand":"recount","stations":[1],"stations":[]}',
     "line 3: stations.0: expected a string, got"),
    # A byte order mark is allowed only at the start of the input (tests/test_bad_input.py).
    ("\ufeff" + E % "1", "line 3: a UTF-8 byte order mark (allowed only at the start"),
])
def test_hostile_lines_get_one_clear_line(text: str | bytes, message: str) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    problem = one_line_problem(parse_line(3, data), 3)
    assert problem.startswith(message), problem


@pytest.mark.parametrize("text", [
    b'{"type":"' + b"k" * MAX_LINE_BYTES + b'"}',
    b'{"type":"StationRegistered","' + b"k" * MAX_LINE_BYTES + b'":1}',
    b'{"type":"ElectionDefined","choices":[{"id":"a","name":"b","' + b"k" * MAX_LINE_BYTES + b'":1}]}',
    b'{"type":"StationRegistered","election":"' + b"\\u0007" * (MAX_LINE_BYTES // 6) + b'"}',
], ids=["type", "field", "nested-field", "id"])
def test_a_megabyte_of_name_or_value_gives_a_short_message(text: bytes) -> None:
    problem = one_line_problem(parse_line(1, text), 1)
    assert len(problem) < 300, problem[:300]


@pytest.mark.parametrize("control", ["\x85", "\x9b", "\x80"])
def test_ids_with_c1_control_characters_are_refused(control: str) -> None:
    line = parse_line(1, (E % "1").replace('"s"', json.dumps(f"s{control}2J")).encode())
    if line.problem is None:
        raise Regression(f"station id {control!r} accepted")
    assert "station: contains control characters" in str(line.problem)


# --- the limits, on streams that never exist in memory --------------------------------------


class Generated(io.RawIOBase):
    """A byte stream made on demand: ``pieces`` yields chunks; counts what was served."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.pending = b""
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.pending = piece
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        self.served += size
        return size


def _endless(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def test_an_endless_line_stops_at_the_line_limit_without_reading_on() -> None:
    raw = Generated(_endless(b"x" * 65_536))
    with pytest.raises(InputTooLarge, match=rf"^line 1: longer than {MAX_LINE_BYTES} bytes$"):
        list(read_lines(io.BufferedReader(raw)))
    assert raw.served <= MAX_LINE_BYTES + 2 * 65_536


def test_a_line_of_exactly_the_limit_is_read_and_one_byte_more_is_refused() -> None:
    event = (E % "1").encode()
    exact = event + b" " * (MAX_LINE_BYTES - len(event))
    assert len(exact) == MAX_LINE_BYTES
    lines = list(read_lines(io.BufferedReader(Generated(iter([exact, b"\n", exact, b"\n"])))))
    assert [line.number for line in lines] == [1, 2] and all(line.event for line in lines)
    with pytest.raises(InputTooLarge, match=r"^line 2: longer than"):
        list(read_lines(io.BufferedReader(Generated(iter([exact, b"\n", exact, b" \n"])))))


def test_a_batch_of_exactly_the_line_limit_is_read_and_one_line_more_is_refused() -> None:
    def pieces() -> Iterator[bytes]:  # MAX_BATCH_LINES - 1 blank lines, a marker, one more
        left = MAX_BATCH_LINES - 1
        while left:
            size = min(left, 1 << 16)
            yield b"\n" * size
            left -= size
        yield b"{}\n"
        yield b"{}\n"

    seen = []
    with pytest.raises(InputTooLarge, match=f"^more than {MAX_BATCH_LINES} lines in one batch"):
        for line in read_lines(io.BufferedReader(Generated(pieces()), 1 << 16)):
            seen.append(line.number)
    assert seen == [MAX_BATCH_LINES]


# --- through the command line: exit codes, messages, nothing half-written --------------------


@dataclass
class Cli:
    db: Path
    directory: Path

    def run(self, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(argv))
                except SystemExit as exit_:  # argparse: usage errors and --help
                    code = exit_.code if isinstance(exit_.code, int) else 2
        finally:
            sys.stdin = saved
        return code, out.getvalue(), err.getvalue()

    def stored(self) -> int:
        with contextlib.closing(sqlite3.connect(self.db)) as connection:
            return connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    path = tmp_path_factory.mktemp("hostile-night") / "night.jsonl"
    bench_module().generate(path, 40, seed=SEED)
    return path.read_text().splitlines()


@pytest.fixture
def cli(tmp_path: Path, night: list[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A SQLite ledger holding the election and its 40 stations, in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DB", raising=False)
    monkeypatch.setenv("LEDGER_READ_MODELS", str(tmp_path / "read-models.db"))
    ledger = Cli(tmp_path / "ledger.db", tmp_path)
    (tmp_path / "setup.jsonl").write_text("\n".join(night[:41]) + "\n")
    code, _, err = ledger.run("append", "setup.jsonl", "--db", str(ledger.db))
    assert code == 0, err
    return ledger


PROBLEM_LINE = re.compile(r"^(line \d+: .+|\.\.\. and \d+ more problem\(s\)|nothing was appended: .+)$")


@given(data=st.data())
@fuzz(60)
def test_a_batch_with_hostile_lines_is_refused_whole_with_one_line_per_problem(
    cli: Cli, night: list[str], data: st.DataObject
) -> None:
    good = data.draw(st.lists(st.sampled_from(night[41:]), max_size=8))
    bad = data.draw(st.lists(hostile_lines(), max_size=4))
    lines = [line.encode() for line in good] + bad
    lines = data.draw(st.permutations(lines))
    batch = b"\n".join(lines) + b"\n"
    via_stdin = data.draw(st.booleans())
    if not via_stdin:
        (cli.directory / "batch.jsonl").write_bytes(batch)
    before = cli.stored()
    code, out, err = cli.run("append", "-" if via_stdin else "batch.jsonl", "--db", str(cli.db),
                             stdin=batch)
    assert "Traceback" not in err
    if code == 0:
        appended = int(re.match(r"appended (\d+) event", out)[1])  # type: ignore[index]
        assert cli.stored() == before + appended
        return
    assert code == 2, err
    assert cli.stored() == before, "a refused batch left events behind"
    messages = err.splitlines()
    assert messages and messages[-1].startswith("nothing was appended"), err
    assert all(PROBLEM_LINE.match(message) for message in messages), err


def test_an_enormous_line_after_a_written_chunk_leaves_nothing_behind(
    cli: Cli, night: list[str]
) -> None:
    """5,001 good lines (the first 5,000 are written inside the transaction) and then a line
    over the limit: exit 2, one line, and not one of the 5,001 stored."""
    stations = [
        json.dumps({"type": "StationRegistered", "election": "nation",
                    "occurred_at": "2030-04-20T00:00:00Z", "station": f"x{i:05d}",
                    "region": "region-00", "registered_voters": 1000})
        for i in range(5_001)
    ]
    path = cli.directory / "enormous.jsonl"
    with path.open("wb") as out:
        out.write("\n".join(stations).encode() + b"\n")
        out.write(b'{"type": "' + b"x" * MAX_LINE_BYTES + b'"}\n')
    before = cli.stored()
    code, out_text, err = cli.run("append", str(path), "--db", str(cli.db))
    assert (code, out_text) == (2, "")
    assert err == f"ledger: line 5002: longer than {MAX_LINE_BYTES} bytes\n"
    assert cli.stored() == before


@pytest.mark.parametrize("line", [
    b'{"type": "StationRegistered", "deep": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"type": "StationRegistered", "election": "nation\xff\xfe"}',
], ids=["deep-nesting", "invalid-utf8-in-a-string"])
def test_lines_that_used_to_crash_the_reader_are_bad_input(cli: Cli, line: bytes) -> None:
    (cli.directory / "one.jsonl").write_bytes(line + b"\n")
    before = cli.stored()
    code, _, err = cli.run("append", "one.jsonl", "--db", str(cli.db))
    assert code == 2, err
    assert err.splitlines()[0].startswith("line 1: ") and "unexpected" not in err
    assert cli.stored() == before


def test_refusing_a_batch_of_long_bad_lines_takes_bounded_memory(tmp_path: Path) -> None:
    from ledger.store.application import BatchRejected, Ledger
    from ledger.store.config import locate

    def bad_lines() -> Iterator[bytes]:
        for _ in range(64):
            yield b'{"type": "' + b"x" * (MAX_LINE_BYTES - 16) + b'"}\n'

    ledger = Ledger(locate(str(tmp_path / "ledger.db")))
    tracemalloc.start()
    try:
        with pytest.raises(BatchRejected) as rejected:
            ledger.append(read_lines(io.BufferedReader(Generated(bad_lines()))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        ledger.close()
    assert len(rejected.value.outcome.problems) == 64
    if peak > 16 * 2**20:
        raise Regression(f"peak {peak / 2**20:.0f} MiB to refuse 64 lines of 1 MiB")


# --- the argument parser -------------------------------------------------------------------


def _commands() -> dict[str, tuple[list[tuple[str, bool, Any]], list[tuple[str, Any]]]]:
    """Every subcommand with its options (name, is a flag, choices) and positionals."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    spec = {}
    for name, command in sub.choices.items():
        if name == "demo":  # builds ten thousand stations: its arguments are tested below
            continue
        if name == "serve":  # serves until stopped: hostile requests are tested in test_serve
            continue
        options = [(a.option_strings[-1], a.nargs == 0, a.choices) for a in command._actions
                   if a.option_strings and a.dest != "help"]
        positionals = [(a.dest, a.choices) for a in command._actions if not a.option_strings]
        spec[name] = (options, positionals)
    return spec


COMMANDS = _commands()
# Argument values: the ledger's own vocabulary, paths that exist or not, and nasty strings
# (no NUL and no line break: a shell cannot pass the first, the second is tested below). Not
# the ledger's own file: `report --out ledger.db` destroys it (tested below).
VALUES = [
    "", "-", "x", "nation", "st0000001", "cec", "observers", "region-01", "..", ".",
    "2030-05-12T22:00:00+00:00", "2030-05-12T22:00:00", "1900-01-01T00:00:00Z",
    "9999-12-31T23:59:59+14:00", "9" * 40, "-1", "NaN", "hostile.jsonl", "setup.jsonl",
    "adir", "/nonexistent/x", "\x1b[31m", "\udcff", "é", "x" * 300, "other.db", "proof.json",
    "note.ckpt", "key.pem",
]
nasty_text = st.text(max_size=8).filter(lambda s: "\x00" not in s and s.splitlines() in ([], [s]))


@st.composite
def argument_lists(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    options, positionals = COMMANDS[name]
    argv = [name]
    for _, choices in positionals:
        argv.append(draw(st.sampled_from(sorted(choices)) if choices
                         else st.sampled_from(VALUES) | nasty_text))
    for option, flag, choices in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        argv.append(option)
        if not flag:
            use_choice = choices and draw(st.booleans())
            argv.append(draw(st.sampled_from(sorted(choices)) if use_choice
                             else st.sampled_from(VALUES) | nasty_text))
    if draw(st.booleans()):  # sometimes a stray token, sometimes shuffled
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(VALUES) | nasty_text))
    return argv


@pytest.fixture
def argv_cli(cli: Cli, night: list[str]) -> Cli:
    (cli.directory / "adir").mkdir()
    (cli.directory / "hostile.jsonl").write_bytes(b"garbage\n" + b"[" * 3000 + b"\n")
    (cli.directory / "proof.json").write_text('{"entry": "x", "leaf_index": -1}')
    (cli.directory / "note.ckpt").write_text("election-ledger/x\n1\nAAAA\n")
    (cli.directory / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    return cli


@given(argv=argument_lists())
@fuzz(600)
def test_random_argument_lists_end_cleanly(argv_cli: Cli, argv: list[str]) -> None:
    before = argv_cli.stored()
    code, _, err = argv_cli.run(*argv, "--db", str(argv_cli.db))
    assert "Traceback" not in err
    assert code in (0, 1, 2), (argv, code, err)
    if code != 0:
        assert argv_cli.stored() == before, f"{argv}: exit {code} after writing events"
        assert err.strip(), f"{argv}: exit {code} without a word"
    if code == 1:
        # Exit 1 is for a failed check or a failing environment, never for bad input.
        assert re.match(r"^ledger (verify|check-proof): FAILED: ", err), (argv, err)
    if code == 1 or (code == 2 and argv[0] not in ("append", "import")):
        assert err.count("\n") == 1, (argv, err)
    if code == 2 and argv[0] == "append":
        assert all(PROBLEM_LINE.match(m) or m.startswith("ledger") for m in err.splitlines())
    if code == 2 and argv[0] == "import":  # its problems may concern the file, not a line
        assert err.startswith("ledger") or err.splitlines()[-1].startswith("nothing was appended")


def test_random_bytes_as_arguments_in_a_real_process(argv_cli: Cli) -> None:
    """The console entry point with arguments no shell would type: undecodable bytes included."""
    rng = random.Random(SEED)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEDGER_DB": str(argv_cli.db)}
    for _ in range(6):
        argv = [bytes(rng.choice(range(1, 256)) for _ in range(rng.randint(0, 12)))
                for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:
            argv.insert(0, rng.choice([b"tally", b"append", b"history", b"verify"]))
        result = subprocess.run([sys.executable, "-m", "ledger", *argv], env=env,
                                cwd=argv_cli.directory, capture_output=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert b"Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 2), (argv, result.stderr)


# --- bugs these tests found in the command line, fixed; each test keeps it fixed -------------


def test_the_db_option_before_the_command_is_obeyed(cli: Cli) -> None:
    """`ledger --db X append` once appended to ./ledger.db instead (argparse's shared action)."""
    target = cli.directory / "other.db"
    before = cli.stored()
    code, _, err = cli.run("--db", str(target), "append", "setup.jsonl")
    assert code == 0, err
    assert Cli(target, cli.directory).stored() == 41
    assert cli.stored() == before


def test_a_file_name_with_a_line_break_gives_a_one_line_error(cli: Cli) -> None:
    code, _, err = cli.run("append", "a\nline 2: forged", "--db", str(cli.db))
    assert code == 2
    if err.count("\n") != 1:
        raise Regression(repr(err))


@pytest.mark.parametrize("argv", [["prove", "\udcff"], ["history", "--station", "a\udcff"],
                                  ["tally", "--election", "\udcff"], ["tally", "--scope", "\udcff"]],
                         ids=["prove", "history", "tally-election", "tally-scope"])
def test_arguments_that_are_not_utf8_are_bad_input(cli: Cli, argv: list[str]) -> None:
    code, _, err = cli.run(*argv, "--db", str(cli.db))
    if code != 2:
        raise Regression(f"exit {code}: {err.strip()}")
    assert err.count("\n") == 1


def test_demo_with_an_absurd_station_count_is_bad_input(cli: Cli) -> None:
    code, _, err = cli.run("demo", "--stations", "9" * 22, "--dir", str(cli.directory / "d"))
    if code != 2:
        raise Regression(f"exit {code}: {err.strip()}")


@pytest.mark.parametrize("prefix", ["", ".", "/nonexistent/dir/cec"])
def test_keygen_with_a_bad_prefix_is_bad_input(cli: Cli, prefix: str) -> None:
    code, _, err = cli.run("keygen", prefix)
    if code != 2:
        raise Regression(f"exit {code}: {err.strip()}")


@pytest.mark.parametrize("out", [".", "x" * 300 + ".html"])
def test_report_to_a_bad_out_path_is_bad_input(cli: Cli, out: str) -> None:
    code, _, err = cli.run("report", "--out", out, "--db", str(cli.db))
    if code != 2:
        raise Regression(f"exit {code}: {err.strip()}")


@pytest.mark.parametrize("rejects", ["/nonexistent/rejects.jsonl", "."])
def test_an_unwritable_rejects_file_is_refused_before_anything_is_stored(
    cli: Cli, night: list[str], rejects: str
) -> None:
    (cli.directory / "mixed.jsonl").write_text(night[41] + "\ngarbage\n")
    before = cli.stored()
    code, _, err = cli.run("append", "mixed.jsonl", "--skip-invalid", "--rejects", rejects,
                           "--db", str(cli.db))
    if cli.stored() != before or code != 2:
        raise Regression(f"exit {code} ({err.strip()}); stored {cli.stored() - before} event(s)")


@pytest.mark.parametrize("argv", [["report", "--out", "{ledger}"],
                                  ["append", "hostile.jsonl", "--skip-invalid", "--rejects", "{ledger}"],
                                  ["report", "--out", "{models}"]],
                         ids=["report-over-ledger", "rejects-over-ledger", "report-over-read-models"])
def test_an_output_file_never_overwrites_the_ledger(argv_cli: Cli, argv: list[str]) -> None:
    models = argv_cli.directory / "read-models.db"
    argv = [a.format(ledger=argv_cli.db, models=models) for a in argv]
    before = argv_cli.stored()
    code, _, err = argv_cli.run(*argv, "--db", str(argv_cli.db))
    try:
        intact = argv_cli.stored() == before and argv_cli.run("verify", "--db", str(argv_cli.db))[0] == 0
        intact = intact and argv_cli.run("tally", "--db", str(argv_cli.db))[0] == 0
    except sqlite3.DatabaseError as error:
        intact, err = False, f"{err.strip()}; then: {error}"
    if not intact:
        raise Regression(f"exit {code}; the ledger or its read models were overwritten: {err.strip()}")
    assert code == 2


@pytest.mark.parametrize("parameter", ["lock_timeout=abc", "connect_timeout=1.5", "pool_size=x"])
def test_a_postgres_url_with_a_non_numeric_parameter_is_bad_input(cli: Cli, parameter: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:1/test?schema=never&{parameter}"
    code, _, err = cli.run("verify", "--db", url)
    if code != 2:
        raise Regression(f"exit {code}: {err.strip()}")

"""Importing an OpenElections precinct CSV (github.com/openelections) as ledger events.

One row of such a file is one candidate's votes in one precinct for one contest
(``county,precinct,office,district,party,candidate,votes``, plus optional columns). The
ledger wants whole protocols, so rows are folded into one ``ProtocolIssued`` per contest
and station; the rows of one precinct are scattered through the file (it is sorted by
office and candidate), so nothing can be emitted before the last row is read. What is kept
meanwhile is one vote map per (contest, station): the size of the events themselves, never
the raw rows. See docs/openelections.md for the mapping and what is skipped.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from ledger.domain.events import MAX_COUNT, MAX_ID_LENGTH, Timestamp
from ledger.input.reader import MAX_LINE_BYTES, Line, Problem, parse_line

REQUIRED_COLUMNS = ("county", "precinct", "office", "candidate", "votes")
OPTIONAL_COLUMNS = ("district", "party")

# Rows are classified by a squeezed key (lower case, letters and digits only), so that
# "Over Votes", "OVERVOTES" and "over-votes" are one thing.
# Pseudo-offices OpenElections uses for precinct-wide figures rather than a contest.
REGISTERED_VOTERS_OFFICES = frozenset({"registeredvoters", "registeredvoterstotal"})
TURNOUT_OFFICES = frozenset({
    "ballotscast", "ballotscastblank", "totalballotscast", "ballots", "turnout",
    "voterturnout", "votersturnout", "timescast", "straightparty", "straightticket",
    "straightpartyticket",
})
# Candidate cells that hold ballots with no valid vote in the contest: counted as invalid.
INVALID_CANDIDATES = frozenset({
    "overvotes", "overvote", "overvoted", "undervotes", "undervote", "undervoted",
    "timesovervoted", "timesblankvoted", "timesundervoted", "blank", "blanks", "blankvotes",
    "blankballots", "spoiled", "spoiledballots", "rejected", "rejectedballots", "invalid",
    "invalidvotes", "void", "voidvotes",
})
# Candidate cells that are sums of other rows: counting them would count votes twice.
AGGREGATE_CANDIDATES = frozenset({
    "total", "totals", "totalvotes", "totalvotescast", "votescast", "timescast",
    "ballotscast", "totalballots", "totalballotscast", "registeredvoters", "turnout",
    "voterturnout", "contesttotal",
})
# County or precinct cells of rows that add up the places above them.
AGGREGATE_PLACES = frozenset({
    "total", "totals", "countytotal", "countytotals", "grandtotal", "grandtotals",
    "statetotal", "statetotals", "statewidetotal",
})
# Words of an OpenElections file name that tell which election of the day this is; a
# county name in the same position (``__fulton__``) is left out of the id.
ELECTION_KINDS = ("primary", "special", "runoff", "recall", "municipal", "caucus", "general")

# Polls close around 20:00 local time. The offset is the state's standard time in the zone
# that holds most of it: November general elections always fall on standard time, so a
# fixed table gives the same timestamp on every machine (no tz database involved) and
# re-importing a file reproduces the same events exactly.
STANDARD_UTC_OFFSETS = {
    "al": -6, "ak": -9, "az": -7, "ar": -6, "ca": -8, "co": -7, "ct": -5, "dc": -5, "de": -5,
    "fl": -5, "ga": -5, "hi": -10, "ia": -6, "id": -7, "il": -6, "in": -5, "ks": -6, "ky": -5,
    "la": -6, "ma": -5, "md": -5, "me": -5, "mi": -5, "mn": -6, "mo": -6, "ms": -6, "mt": -7,
    "nc": -5, "nd": -6, "ne": -6, "nh": -5, "nj": -5, "nm": -7, "nv": -8, "ny": -5, "oh": -5,
    "ok": -6, "or": -8, "pa": -5, "ri": -5, "sc": -5, "sd": -6, "tn": -6, "tx": -6, "ut": -7,
    "va": -5, "vt": -5, "wa": -8, "wi": -6, "wv": -5, "wy": -7, "pr": -4, "vi": -4, "gu": 10,
    "as": -11, "mp": 10,
}
POLLS_CLOSE = "20:00:00"

_FILE_NAME = re.compile(r"^(?P<date>\d{8})__(?P<state>[a-z]{2})__(?P<rest>.*?)\.csv$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")
_encode = msgspec.json.Encoder().encode


def read_openelections(
    stream: IO[str] | Path,
    *,
    occurred_at: str | None = None,
    authority: str = "openelections",
) -> Iterator[Line]:
    """The events of an OpenElections precinct CSV, as lines ``Ledger.append`` accepts.

    Every ``ElectionDefined`` comes first, then every ``StationRegistered``, then every
    ``ProtocolIssued``; rows that cannot be read come out as lines with a ``Problem``
    (``number`` is the row's physical line in the file, ``text`` the row as written).
    """
    name = stream.name if isinstance(stream, Path) else getattr(stream, "name", None)
    context = _context(name if isinstance(name, str) else None, occurred_at, authority)
    if isinstance(context, Problem):
        yield Line(0, b"", None, context)
        return
    if isinstance(stream, Path):
        with stream.open("rb") as handle:
            yield from _Import(context).run(_Source(handle))
    else:
        yield from _Import(context).run(_Source(stream))


@dataclass(frozen=True)
class _Context:
    prefix: str  # of every election id: "mt-2020-11-03"
    label: str  # shown in election names: "MT 2020-11-03"
    occurred_at: str
    authority: str


def _context(name: str | None, occurred_at: str | None, authority: str) -> _Context | Problem:
    """What the whole file shares: the id prefix, the timestamp and the reporter."""
    if not authority or len(authority) > MAX_ID_LENGTH or _CONTROL.search(authority):
        return Problem(0, "authority", f"expected an id of 1-{MAX_ID_LENGTH} characters "
                       f"without control characters, got {authority!r}")
    when: datetime | None = None
    if occurred_at is not None:
        try:
            when = msgspec.json.decode(_encode(occurred_at), type=Timestamp)
        except msgspec.ValidationError:
            return Problem(0, "occurred_at", "expected an RFC 3339 timestamp with a UTC offset "
                           f"(like 2020-11-03T20:00:00-07:00), got {occurred_at!r}")
    match = _FILE_NAME.match(Path(name).name) if name else None
    day = _date(match["date"]) if match else None
    if day is not None and match is not None:
        state = match["state"].lower()
        kinds = [w for w in match["rest"].lower().split("__") if w in ELECTION_KINDS]
        kinds = [kind for kind in kinds if kind != "general"]
        prefix = "-".join([f"{state}-{day.isoformat()}", *kinds])
        label = " ".join([state.upper(), day.isoformat(), *kinds])
        if when is None:
            hours = STANDARD_UTC_OFFSETS.get(state)
            offset = "Z" if hours is None else f"{'-' if hours < 0 else '+'}{abs(hours):02d}:00"
            return _Context(prefix, label, f"{day.isoformat()}T{POLLS_CLOSE}{offset}", authority)
        return _Context(prefix, label, occurred_at or "", authority)
    if when is None:
        return Problem(0, "occurred_at", "the file name does not start with the election date "
                       "(like 20201103__mt__general__precinct.csv): give the time the results "
                       "were issued (--occurred-at)")
    # Without a file name, the date as written (local to its offset) names the election.
    local_day = when.date().isoformat()
    return _Context(local_day, local_day, occurred_at or "", authority)


def _date(digits: str) -> date | None:
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


class _Source:
    """Physical lines for ``csv.reader``, remembering which lines made the current row.

    ``csv`` hides line boundaries (a quoted cell may span lines); counting the lines it
    pulls gives each row its first line number and its text exactly as written.
    """

    def __init__(self, handle: IO[Any]) -> None:
        self.handle = handle
        self.number = 0
        self.pending: list[str] = []
        self.undecodable: tuple[int, int] | None = None  # (line, byte) of the first bad byte
        self.too_long: int | None = None

    def __iter__(self) -> _Source:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith("\n" if isinstance(raw, str) else b"\n"):
            self.too_long = self.number
            raise StopIteration
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                line = raw.decode("utf-8", "replace")
                if self.undecodable is None:
                    self.undecodable = (self.number, error.start + 1)
        else:
            line = raw
        if self.number == 1:
            line = line.removeprefix("\ufeff")
        self.pending.append(line)
        return line

    def take(self) -> tuple[int, bytes, tuple[int, int] | None]:
        """The current row's first line number, its text, and where it is not UTF-8."""
        first = self.number - len(self.pending) + 1
        text = "".join(self.pending).rstrip("\r\n").encode("utf-8")
        bad, self.undecodable = self.undecodable, None
        self.pending = []
        return first, text, bad


@dataclass(slots=True)
class _Contest:
    name: str
    line: int
    text: bytes
    choices: dict[str, _Choice] = field(default_factory=dict)


@dataclass(slots=True)
class _Choice:
    name: str
    parties: dict[str, int] = field(default_factory=dict)  # party code -> rows using it


@dataclass(slots=True)
class _Tally:
    line: int
    text: bytes
    # (choice id, party cell) -> votes; a choice id of "" holds invalid ballots under the
    # row's own label. A second row with the same key is a duplicate, while the same
    # candidate under two parties (fusion tickets, as in New York) is added up.
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


StationKey = tuple[str, str]  # (county folded to one case, precinct)


class _Import:
    def __init__(self, context: _Context) -> None:
        self.context = context
        self.contests: dict[str, _Contest] = {}
        self.tallies: dict[tuple[str, str, str], _Tally] = {}  # (election, county key, precinct)
        self.spellings: dict[str, dict[str, int]] = {}  # county key -> spelling -> rows
        self.electorate: dict[StationKey, int] = {}
        self.incomplete: set[tuple[str, str, str]] = set()
        # A bad row that cannot be tied to a contest and station could belong to any
        # protocol: then no protocol can be trusted to be complete, and none is emitted.
        self.blind = False

    def run(self, source: _Source) -> Iterator[Line]:
        rows = csv.reader(source)
        header = self._header(rows, source)
        if isinstance(header, Line):
            yield header
            return
        index, width = header
        while True:
            try:
                cells = next(rows)
            except StopIteration:
                break
            except csv.Error as error:
                number, text, _ = source.take()
                self.blind = True
                yield Line(number, text, None, Problem(number, None, f"unreadable CSV: {error}"))
                continue
            number, text, bad = source.take()
            if not any(cell.strip() for cell in cells):
                continue
            if bad is not None:
                self.blind = True
                yield Line(number, text, None, Problem(number, None, f"not valid UTF-8 (byte {bad[1]})"))
                continue
            if (problem := self._row(number, text, cells, index, width)) is not None:
                yield Line(number, text, None, problem)
        if source.too_long is not None:
            yield Line(source.too_long, b"", None,
                       Problem(source.too_long, None, f"longer than {MAX_LINE_BYTES} bytes"))
            return
        if not self.blind:
            yield from self._events()

    def _header(self, rows: Iterator[list[str]], source: _Source) -> tuple[dict[str, int], int] | Line:
        try:
            cells = next(rows, None)
        except csv.Error as error:
            cells, problem = None, f"unreadable CSV header: {error}"
        else:
            problem = "the file is empty; expected a header line" if cells is None else ""
        number, text, bad = source.take()
        if bad is not None:
            problem = f"not valid UTF-8 (byte {bad[1]})"
        if problem or cells is None:
            return Line(1, text, None, Problem(1, "header", problem))
        index: dict[str, int] = {}
        for position, cell in enumerate(cells):
            index.setdefault(cell.strip().lower(), position)
        missing = [column for column in REQUIRED_COLUMNS if column not in index]
        if missing:
            return Line(number, text, None, Problem(
                number, "header", f"missing column(s) {', '.join(missing)}; the importer needs "
                f"{', '.join(REQUIRED_COLUMNS)} (and reads {', '.join(OPTIONAL_COLUMNS)} if present)",
            ))
        return index, len(cells)

    def _row(
        self, number: int, text: bytes, cells: list[str], index: dict[str, int], width: int
    ) -> Problem | None:
        if len(cells) != width:
            # A comma inside an unquoted name shifts every later cell: the "votes" cell
            # might then hold another number, so the row is refused rather than guessed at.
            self.blind = True
            return Problem(number, None, f"has {len(cells)} cells, but the header has {width}")
        row = {column: cells[index[column]].strip() if column in index else ""
               for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
        for column, value in row.items():
            if _CONTROL.search(value):
                self.blind = True
                return Problem(number, column, f"contains control characters: {value!r}")
        county, precinct, office = row["county"], row["precinct"], row["office"]
        for column in ("county", "precinct", "office"):
            if not row[column]:
                self.blind = True
                return Problem(number, column, "is empty")
        if _squeeze(county) in AGGREGATE_PLACES or _squeeze(precinct) in AGGREGATE_PLACES:
            return None
        county_key = " ".join(county.split()).casefold()
        spellings = self.spellings.setdefault(county_key, {})
        spellings[county] = spellings.get(county, 0) + 1
        office_key = _squeeze(office)
        if office_key in REGISTERED_VOTERS_OFFICES:
            return self._electorate(number, (county_key, precinct), row["votes"])
        if office_key in TURNOUT_OFFICES:
            return None
        candidate = row["candidate"]
        candidate_key = _squeeze(candidate)
        if candidate_key in AGGREGATE_CANDIDATES:
            return None
        election, contest = self._contest(number, text, office, row["district"])
        tally_key = (election, county_key, precinct)
        tally = self.tallies.get(tally_key)
        if tally is None:
            tally = self.tallies[tally_key] = _Tally(number, text)
        if not candidate:
            self.incomplete.add(tally_key)
            return Problem(number, "candidate", "is empty")
        party = row["party"]
        if party and party.casefold() in (county.casefold(), precinct.casefold()):
            # Some rows repeat the place name in the party cell (Montana 2020: "PCT 13").
            party = ""
        if candidate_key in INVALID_CANDIDATES:
            key = ("", candidate_key)
        else:
            choice_id = _slug(candidate, limit=80)
            choice = contest.choices.get(choice_id)
            if choice is None:
                choice = contest.choices[choice_id] = _Choice(candidate)
            if party:
                choice.parties[party] = choice.parties.get(party, 0) + 1
            key = (choice_id, party)
        votes = _count(row["votes"])
        if isinstance(votes, str):
            self.incomplete.add(tally_key)
            return Problem(number, "votes", votes)
        if key in tally.counts:
            self.incomplete.add(tally_key)
            return Problem(number, "candidate", f"a second row for {candidate!r} in {office!r} at "
                           f"{county}/{precinct}; each candidate has one row per precinct")
        tally.counts[key] = votes
        return None

    def _electorate(self, number: int, station: StationKey, cell: str) -> Problem | None:
        if not cell:
            return None  # not given: the station's electorate stays unknown (null)
        voters = _count(cell)
        if isinstance(voters, str):
            self.blind = True
            return Problem(number, "votes", voters)
        known = self.electorate.setdefault(station, voters)
        if known != voters:
            self.blind = True
            return Problem(number, "votes", f"registered voters of this precinct were already "
                           f"given as {known}, here {voters}")
        return None

    def _contest(self, number: int, text: bytes, office: str, district: str) -> tuple[str, _Contest]:
        # Numeric districts are numbers: "01" and "1" are one district.
        district = str(int(district)) if district.isdigit() else district
        election = f"{self.context.prefix}/{_slug(office, limit=60)}"
        if district:
            election += f"/district-{_slug(district, limit=40)}"
        contest = self.contests.get(election)
        if contest is None:
            name = f"{office} district {district}" if district else office
            contest = self.contests[election] = _Contest(f"{name} ({self.context.label})", number, text)
        return election, contest

    def _events(self) -> Iterator[Line]:
        county_names = {key: _preferred(spellings) for key, spellings in self.spellings.items()}
        defined = {election for election, contest in self.contests.items() if contest.choices}
        when, authority = self.context.occurred_at, self.context.authority
        for election, contest in self.contests.items():
            if election not in defined:
                continue  # only over/under-vote rows: there is no one to vote for
            choices = []
            for choice_id, choice in contest.choices.items():
                entry = {"id": choice_id, "name": choice.name}
                if choice.parties:
                    # The usual label wins (first seen on a tie): one stray cell does not
                    # relabel a candidate.
                    entry["party"] = max(choice.parties, key=choice.parties.__getitem__)
                choices.append(entry)
            yield _line(contest.line, contest.text, {
                "type": "ElectionDefined", "election": election, "occurred_at": when,
                "name": contest.name, "seats": 1, "method": "plurality", "threshold_pct": 0,
                "threshold_base": "valid", "authority": authority, "choices": choices,
            })
        for (election, county_key, precinct), tally in self.tallies.items():
            if election in defined:
                county = county_names[county_key]
                yield _line(tally.line, tally.text, {
                    "type": "StationRegistered", "election": election, "occurred_at": when,
                    "station": f"{county}/{precinct}", "region": county,
                    "registered_voters": self.electorate.get((county_key, precinct)),
                })
        for tally_key, tally in self.tallies.items():
            election, county_key, precinct = tally_key
            if election not in defined or tally_key in self.incomplete:
                continue
            station = f"{county_names[county_key]}/{precinct}"
            votes: dict[str, int] = {}
            invalid = 0
            for (choice_id, _), count in tally.counts.items():
                if choice_id:
                    votes[choice_id] = votes.get(choice_id, 0) + count
                else:
                    invalid += count
            # No event_id: like every line, its identity is derived from its content
            # (events.identity), so re-importing the same file is a no-op.
            yield _line(tally.line, tally.text, {
                "type": "ProtocolIssued", "election": election, "occurred_at": when,
                "station": station, "reported_by": authority,
                "registered_voters": self.electorate.get((county_key, precinct)),
                "ballots_issued": None, "ballots_cast": sum(votes.values()) + invalid,
                "invalid": invalid, "votes": votes,
            })


def _line(number: int, text: bytes, event: dict[str, Any]) -> Line:
    # Through the same decoder as an appended JSON line: same validation, same messages.
    parsed = parse_line(number, _encode(event))
    return Line(number, text, parsed.event, parsed.problem)


def _count(cell: str) -> int | str:
    """The cell as a count, or why it is not one."""
    if _DIGITS.fullmatch(cell):
        value = int(cell)
        if value <= MAX_COUNT:
            return value
        return f"expected an integer <= {MAX_COUNT}, got {_show(cell)}"
    return f"expected an integer >= 0 written with digits only, got {_show(cell)}"


def _show(cell: str) -> str:
    shown = _encode(cell).decode()
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _squeeze(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.casefold())


def _slug(text: str, *, limit: int) -> str:
    """Lower-case ASCII words joined by hyphens: ``U.S. House`` -> ``u-s-house``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if slug and len(slug) <= limit:
        return slug
    # Too long or nothing left (a name in another script): a digest keeps ids distinct.
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{slug[: limit - 13].rstrip('-')}-{digest}" if slug else f"x-{digest}"


def _preferred(spellings: dict[str, int]) -> str:
    """One spelling per county: ``Lincoln`` over ``LINCOLN``, else the most used."""
    return max(spellings, key=lambda s: (not s.isupper(), spellings[s]))


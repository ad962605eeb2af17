"""The application layer: what the ledger does, whichever adapter asks.

The command line (``ledger.cli.commands``) and the HTTP API (``ledger.http``) are adapters over
the one ``LedgerService``: they turn arguments or requests into plain values, call a method
here, and render the plain dicts and objects it returns. No query is written twice, and the
decision "are the read models current, catch them up if not" is made in ``read_models``.

Heavy libraries (the event store, psycopg, matplotlib) are imported where first needed: a
query against current read models never loads them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import BadInput, Failure
from ledger.store.config import Location
from ledger.store.head import postgres_head, postgres_states, sqlite_head, sqlite_states
from projections.errors import QueryError
from projections.moment import ALWAYS, BadMoment, Moment, moment, settled
from projections.schema import SCHEMA_VERSION, applied_position, connect, schema_version, torn

if TYPE_CHECKING:
    from ledger.input.reader import Line, Problem
    from ledger.input.station_table import StationTable, TableMap
    from ledger.store.application import Ledger
    from ledger.store.batch import Outcome
    from ledger.store.integrity import Verified
    from ledger.store.replica import Mirrored
    from ledger.store.session import Held
    from ledger.trust.checkpoint import Checkpoint
    from projections.tally import Election


class NotFound(BadInput):
    """The question names an election or station the ledger does not define."""


class Refused(BadInput):
    """A batch had bad lines, and nothing of it was stored."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.problem_count} problem(s); nothing was appended")
        self.outcome = outcome

    @property
    def problems(self) -> list[Problem]:
        return self.outcome.problems


class MapRefused(BadInput):
    """A station table's map names choices or lines its election does not define."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the map; nothing was appended")
        self.problems = problems


@dataclass(frozen=True)
class Receipt:
    """What one accepted batch did to the log."""

    appended: int
    already_recorded: int
    first_position: int | None
    last_position: int | None
    flagged: list[Problem]
    rejected: int = 0
    outcome: Any = field(default=None, repr=False, compare=False)
    read_models_updated: int | str = 0

    def summary(self) -> dict[str, Any]:
        """The JSON shape of an append (the command line's ``--format json``)."""
        return {
            "appended": self.appended,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "already_recorded": self.already_recorded,
            "rejected": self.rejected,
            "flagged": [str(problem) for problem in self.flagged],
            "read_models_updated": self.read_models_updated,
        }


@dataclass(frozen=True)
class Snapshot:
    """What one consistent reading of the read models reflects."""

    position: int                   # the last log position folded into them
    latest_recorded_at: str | None  # that event's recorded_at (UTC stamp); None if no event

    def settled(self, at: Moment) -> bool:
        """An answer about ``at`` read from this snapshot can never change."""
        return settled(at, self.latest_recorded_at)


def when(as_of: str | None = None, known_at: str | None = None,
         names: tuple[str, str] = ("--as-of", "--known-at")) -> Moment:
    """The moment a question is asked about; ``names`` are the adapter's words for the two
    bounds, so an error names what the user typed."""
    try:
        return moment(as_of, known_at, names=names)
    except BadMoment as error:
        raise BadInput(str(error)) from None


@contextmanager
def answering() -> Iterator[None]:
    """A question the read models cannot answer as asked is the user's mistake (exit 2)."""
    try:
        yield
    except QueryError as error:
        raise BadInput(str(error)) from None


@contextmanager
def read_model_file(path: Path) -> Iterator[None]:
    """SQLite names no file in "unable to open database file": say which, and where."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        if isinstance(error, sqlite3.OperationalError) and not (
            "unable to open" in reason or "readonly" in reason
        ):
            raise
        raise Failure(f"cannot write the read models at {path.resolve()}: {reason} (is its "
                      "directory writable? LEDGER_READ_MODELS can put them elsewhere)") from None


class LedgerService:
    """One ledger, for the life of a command or a server process."""

    def __init__(self, location: Location, *, unsynced_read_models: bool = False) -> None:
        self.location = location
        # A server catches the read models up many times a second: without a sync per
        # catch-up, safely (projections.schema.unsynced); settled by ``close``.
        self.unsynced_read_models = unsynced_read_models
        self._ledger: Ledger | None = None
        self._pinned = threading.local()  # the connection of this thread's snapshot, if any

    # -- the event store ------------------------------------------------------------------

    def ledger(self, *, must_exist: bool = False) -> Ledger:
        """The event store, opened on first use and kept until ``close``."""
        if self._ledger is None:
            self._ledger = open_event_store(self.location, must_exist=must_exist)
        return self._ledger

    def close(self) -> None:
        if self.unsynced_read_models and self.location.read_models_path().exists():
            from projections.schema import settle

            with read_model_file(self.location.read_models_path()):
                settle(self.location.read_models_path())
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> LedgerService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, lines: Iterable[Line], *, skip_invalid: bool = False,
               catch_up: bool = True) -> Receipt:
        """Check every line, store the accepted ones in one transaction, then bring the
        read models up to date. Raises ``Refused`` (nothing stored) unless ``skip_invalid``."""
        from ledger.store.application import BatchRejected
        from ledger.store.session import LedgerBusy

        ledger = self.ledger()
        try:
            appended = ledger.append(lines, skip_invalid=skip_invalid)
        except BatchRejected as rejected:
            raise Refused(rejected.outcome) from None
        except LedgerBusy as busy:
            raise Failure(str(busy)) from None
        outcome = appended.outcome
        caught_up: int | str = 0
        if catch_up:
            try:
                caught_up = self.refresh_read_models()
            except sqlite3.OperationalError as busy:
                # The batch is committed; the models catch up at the next query.
                caught_up = f"not yet ({busy}); they catch up at the next query"
        return Receipt(
            appended=appended.count,
            already_recorded=outcome.already_recorded,
            first_position=appended.first_position,
            last_position=appended.last_position,
            flagged=list(outcome.flagged),
            # Lines of the input refused (a table's row may stand for two events).
            rejected=len({line.number for line, _ in outcome.rejected_lines}) if skip_invalid else 0,
            outcome=outcome,
            read_models_updated=caught_up,
        )

    def station_table(self, path: Path, table_map: TableMap) -> StationTable:
        """The lines of a station-level table, once its map is checked against the
        election it reports on. Stations the ledger already knows are not registered again:
        they are read at once here, outside the import's write transaction (a lookup per row
        would hold that transaction idle); should another writer register one meanwhile, the
        import's registration of it is a no-op or, if it differs, refused."""
        from ledger.input.station_table import read_station_table, undefined_in
        from ledger.store.application import stored_election

        election = stored_election(self.ledger(), table_map.election)
        if election is None:
            raise BadInput(f"election: unknown election {table_map.election!r}; "
                           "define it first (ledger append)")
        if undefined := undefined_in(table_map, election):
            raise MapRefused(undefined)
        with self.read_models() as db:
            known = {row[0] for row in db.execute(
                "SELECT station FROM stations WHERE election = ?", [table_map.election])}
        return read_station_table(path, table_map, known_station=known.__contains__)

    def signature_problems(self, lines: Sequence[Line]) -> list[Problem]:
        """The signatures among ``lines`` that the keys the ledger holds now refuse. Only to
        say why a request already refused for its content is refused (signatures come
        first): what is appended is always checked inside the write transaction."""
        from ledger.domain.events import decoder
        from ledger.domain.keyring import Keyring
        from ledger.input.reader import Problem
        from ledger.trust.signatures import SignatureRefused, authenticate

        elections: dict[str, Any] = {}
        keyring = Keyring()
        problems = []
        with self.read_models() as db:
            for line in lines:
                event = line.event
                if event is None or not event.signature:
                    continue
                if event.election not in elections:
                    row = db.execute(
                        "SELECT payload FROM events WHERE election = ? AND type = "
                        "'ElectionDefined' ORDER BY position LIMIT 1", [event.election]).fetchone()
                    elections[event.election] = decoder.decode(row[0]) if row else None
                    keyring.load_election(event.election, [
                        decoder.decode(payload) for (payload,) in db.execute(
                            "SELECT payload FROM events WHERE election = ? AND type IN "
                            "('ReporterRegistered', 'ReporterKeyRevoked') ORDER BY position",
                            [event.election])])
                try:
                    authenticate(event, line.text, elections[event.election], keyring)
                except SignatureRefused as refused:
                    problems.append(Problem(line.number, "signature", str(refused)))
        return problems

    def replay(self, log: Callable[[Any], Any] = lambda log: log) -> int:
        """Rebuild every read model from position 0; ``log`` may wrap the log (progress)."""
        from projections.apply import rebuild

        ledger = self.ledger(must_exist=True)
        path = self.location.read_models_path()
        with read_model_file(path):
            return rebuild(path, log(ledger))

    # -- the read models -------------------------------------------------------------------

    def refresh_read_models(self) -> int:
        """Fold what the log holds beyond the read models into them; return how many events."""
        from projections.apply import catch_up, rebuild
        from projections.schema import open_read_models, unsynced

        path = self.location.read_models_path()
        ledger = self.ledger(must_exist=True)
        with read_model_file(path):
            db = open_read_models(path)
            try:
                if (applied_position(db) > 0 and schema_version(db) == SCHEMA_VERSION
                        and not torn(db)):
                    if self.unsynced_read_models:
                        unsynced(db)
                    return catch_up(db, ledger)
            finally:
                db.conn.close()
            # A first load is a rebuild (bulk-loaded, then indexed, instead of row by indexed
            # row); so is a model of an older shape, or one a machine crash may have torn.
            return rebuild(path, ledger)

    def read_models_current(self) -> bool:
        """True when the read models hold every logged event, in the current shape."""
        path = self.location.read_models_path()
        if not path.exists():
            return False
        head: int | None
        if self._ledger is not None:
            head = self._ledger.head()
        elif self.location.is_postgres:
            head = postgres_head(self.location.postgres_settings())
            if head is None:
                head = self.ledger().head()  # says why the ledger cannot be read
        elif Path(self.location.db).exists():
            # One indexed read of the SQLite ledger, without loading the event store.
            head = sqlite_head(self.location.db)
        else:
            return False
        with closing(connect(path)) as db:
            try:
                return (head is not None and applied_position(db) == head
                        and schema_version(db) == SCHEMA_VERSION and not torn(db))
            except sqlite3.Error:
                return False

    @contextmanager
    def read_models(self) -> Iterator[sqlite3.Connection]:
        """The read models, caught up with the log first, so every answer is current (or, in
        a ``snapshot``, the snapshot's reading of them)."""
        pinned = getattr(self._pinned, "db", None)
        if pinned is not None:
            with answering():
                yield pinned
            return
        if not self.read_models_current():
            self.refresh_read_models()
        with closing(connect(self.location.read_models_path())) as db, answering():
            yield db

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One reading of the read models, caught up with the log first, for several
        questions: every question asked inside it, in this thread, reads the same log
        position, which the snapshot names (the HTTP API's ETag). It holds SQLite's shared
        lock on the read-model file until it ends, so a catch-up commits after it: keep it
        to the questions."""
        with self.read_models() as db:
            db.execute("BEGIN")
            try:
                position = applied_position(db)
                latest = db.execute("SELECT recorded_at FROM events WHERE position = ?",
                                    [position]).fetchone()
                self._pinned.db = db
                yield Snapshot(position, latest[0] if latest else None)
            finally:
                self._pinned.db = None
                db.execute("COMMIT")

    # -- questions -------------------------------------------------------------------------

    def elections(self, at: Moment = ALWAYS, *, election: str | None = None
                  ) -> list[dict[str, Any]]:
        from projections.tally import elections

        with self.read_models() as db:
            return elections(db, at, election)

    def history(self, at: Moment, *, election: str | None = None,
                station: str | None = None) -> list[dict[str, Any]]:
        from projections.audit import history

        with self.read_models() as db:
            return history(db, at, self.stored_events, election=election, station=station)

    def tally(self, at: Moment, *, election: str | None = None, stage: str = "preliminary",
              reporter: str | None = None, scope: str | None = None) -> dict[str, Any]:
        from projections.tally import load_election, tally

        with self.read_models() as db:
            return tally(db, load_election(db, election), at, stage=stage, reporter=reporter,
                         scope=scope)

    def seats(self, at: Moment, *, election: str | None = None, stage: str = "preliminary",
              reporter: str | None = None, scope: str | None = None) -> dict[str, Any]:
        from projections.tally import load_election, seats

        with self.read_models() as db:
            return seats(db, load_election(db, election), at, stage=stage, reporter=reporter,
                         scope=scope)

    def forensics(self, at: Moment, *, election: str | None = None,
                  stage: str = "preliminary", reporter: str | None = None,
                  scope: str | None = None, choice: str | None = None) -> dict[str, Any]:
        from projections.forensics import forensics
        from projections.tally import load_election

        with self.read_models() as db:
            return forensics(db, load_election(db, election), at, stage=stage,
                             reporter=reporter, scope=scope, choice=choice)

    def estimate(self, at: Moment, *, election: str | None = None,
                 stage: str = "preliminary", reporter: str | None = None,
                 scope: str | None = None, confidence: float = 0.95) -> dict[str, Any]:
        from projections.estimate import estimate
        from projections.tally import load_election

        with self.read_models() as db:
            return estimate(db, load_election(db, election), at, stage=stage,
                            reporter=reporter, scope=scope, confidence=confidence)

    def audit(self, at: Moment, *, election: str | None = None,
              station: str | None = None) -> dict[str, Any]:
        from projections.audit import audit

        with self.read_models() as db:
            return audit(db, at, self.stored_events, election=election, station=station)

    def withheld(self, at: Moment, *, election: str | None = None) -> dict[str, Any]:
        from projections.audit import withheld

        with self.read_models() as db:
            return withheld(db, at, election=election)

    def appeals(self, at: Moment, *, election: str | None = None) -> list[dict[str, Any]]:
        from projections.audit import appeals

        with self.read_models() as db:
            return appeals(db, at, election=election)

    def reporters(self, at: Moment, *, election: str | None = None) -> dict[str, Any]:
        """Every reporter of the election with what it reported, and the span of its events
        and of its protocols on both time axes."""
        from projections.reporters import reporters
        from projections.tally import load_election

        with self.read_models() as db:
            return reporters(db, load_election(db, election), at)

    def require(self, election: str, station: str | None = None,
                reporter: str | None = None) -> None:
        """``NotFound`` unless the ledger defines this election (and this station in it, and
        knows this reporter in it)."""
        from projections.tally import unknown, unknown_reporter

        with self.read_models() as db:
            missing = unknown(db, election, station)
            if missing is None and reporter is not None:
                missing = unknown_reporter(db, election, reporter)
        if missing:
            raise NotFound(missing)

    def election(self, election: str | None) -> Election:
        from projections.tally import load_election

        with self.read_models() as db:
            return load_election(db, election)

    def nist_report(self, at: Moment, *, election: str | None = None,
                    stage: str = "preliminary") -> dict[str, Any]:
        from projections.nist import election_report
        from projections.tally import load_election

        with self.read_models() as db:
            return election_report(db, load_election(db, election), at, stage=stage)

    def html_report(self, at: Moment, *, election: str | None = None) -> str:
        from projections.report import render_report
        from projections.tally import load_election

        with self.read_models() as db:
            return render_report(db, load_election(db, election), at)

    # -- the log itself --------------------------------------------------------------------

    def log(self, after: int = 0, limit: int = 1_000) -> bytes:
        """Up to ``limit`` recorded entries after position ``after``, as JSON Lines in the
        served form (``ledger.trust.logrow``): each line carries what its Merkle leaf hashes."""
        from ledger.trust.logrow import render

        rows = self.ledger(must_exist=True).recorder.select_entries(after, limit)
        return b"".join(render(*row) for row in rows)

    def held(self) -> Held | None:
        """The latest checkpoint this ledger accepted as a replica; None if it is none."""
        return self.ledger(must_exist=True).recorder.integrity_index().held()

    def head(self) -> int:
        return self.ledger(must_exist=True).head()

    def stored_events(self, positions: Sequence[int]) -> dict[int, bytes]:
        """The log's stored payloads at ``positions`` (JSON with ``recorded_at``, ``event`` and
        for a signed event ``signed``), read without loading the event store's library."""
        if self.location.is_postgres:
            return postgres_states(self.location.postgres_settings(), positions)
        return sqlite_states(self.location.db, positions)

    def origin(self) -> str:
        from ledger.store.integrity import origin

        return origin(self.ledger(must_exist=True).recorder.integrity_index())

    # -- integrity -------------------------------------------------------------------------

    def checkpoint(self, key: Any = None, name: str | None = None) -> Checkpoint:
        """The log's current checkpoint, signed with ``key`` if given, and recorded."""
        from ledger.store.integrity import checkpoint_of
        from ledger.store.session import utc_now
        from ledger.trust.checkpoint import sign

        tree = self.ledger(must_exist=True).recorder.integrity_index()
        note = checkpoint_of(tree)
        if key is not None:
            note = sign(note, key, name or note.origin)
        latest = tree.latest_checkpoint()
        if latest is None or (latest[0], bytes(latest[1])) != (note.size, note.root):
            # Recorded once per tree state: a server answering GET /v1/checkpoint must not
            # add a row for every request.
            tree.record_checkpoint(note.size, note.root, utc_now().isoformat(), note.text())
        return note

    def published_checkpoint(self, key: Any = None, name: str | None = None) -> str:
        """The note ``GET /v1/checkpoint`` answers: a replica's is its source's, verbatim (with
        every signature it came with), so that replicas can be mirrored in turn."""
        held = self.held()
        return held.note if held is not None else self.checkpoint(key, name).text()

    # -- replicas ---------------------------------------------------------------------------

    def mirror(self, url: str, public_key: Any, policy: Any = None, *,
               tick: Callable[[int, int], None] | None = None, catch_up: bool = True) -> Mirrored:
        """Mirror the checkpoint the ledger at ``url`` serves into this one, all or nothing
        (``ledger.store.replica``), then bring the read models up to date."""
        from ledger.remote.client import Remote
        from ledger.store.replica import mirror

        mirrored = mirror(self.ledger(), Remote(url), _acceptor(url, public_key, policy), tick)
        if catch_up and mirrored.added:
            self.refresh_read_models()
        return mirrored

    def follow(self, url: str, public_key: Any, policy: Any = None, *,
               report: Callable[[Mirrored], None],
               unreachable: Callable[[str, float], None] | None = None,
               tick: Callable[[int, int], None] | None = None,
               stop: Callable[[], bool] = lambda: False) -> None:
        """Mirror each checkpoint the source announces on its feed (``replica.follow``)."""
        from ledger.remote.client import Remote, Unreachable
        from ledger.store.replica import follow

        follow(self.ledger(), Remote(url), _acceptor(url, public_key, policy), report,
               transient=Unreachable, stop=stop, tick=tick, unreachable=unreachable)

    def verify(self, anchor: Checkpoint | None = None) -> Verified:
        """Recompute every hash; raises ``IntegrityFailure`` naming what does not match."""
        from ledger.store.integrity import verify

        recorder = self.ledger(must_exist=True).recorder
        return verify(recorder, recorder.integrity_index(), anchor)

    def prove(self, event_id: str, anchor: Checkpoint | None = None) -> dict[str, Any]:
        """The inclusion proof of one event; ``BadInput`` if the log does not hold it."""
        from ledger.store.integrity import inclusion_proof

        recorder = self.ledger(must_exist=True).recorder
        try:
            return inclusion_proof(recorder, recorder.integrity_index(), event_id, anchor)
        except LookupError as error:
            raise BadInput(str(error).strip('"')) from None

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the log at ``old_size`` to ``new_size``;
        ``BadInput`` unless 0 < old_size <= new_size <= the log's size."""
        from ledger.trust import merkle

        tree = self.ledger(must_exist=True).recorder.integrity_index()
        size = tree.size()
        if not 0 < old_size <= new_size <= size:
            raise BadInput(f"sizes {old_size} and {new_size}: a consistency proof needs "
                           f"0 < from <= to <= {size} (the log's size)")
        return merkle.consistency_proof(old_size, new_size, tree.read_node)

    def record_checkpoint(self, checkpoint: Checkpoint, note: str) -> None:
        """Keep a checkpoint as published, with every signature and cosignature it carries."""
        from ledger.store.session import utc_now

        tree = self.ledger(must_exist=True).recorder.integrity_index()
        tree.record_checkpoint(checkpoint.size, checkpoint.root, utc_now().isoformat(), note)

    def check_receipt(self, receipt: dict[str, Any], public_key: Any,
                      anchor: Checkpoint | None = None) -> list[dict[str, Any]]:
        """The receipt's events, once its signature, the log and ``anchor`` all bear it out;
        ``BadReceipt`` naming the first thing that does not."""
        from ledger.store.integrity import check_receipt_against_log
        from ledger.trust.receipt import check_signature

        events = check_signature(receipt, public_key)
        recorder = self.ledger(must_exist=True).recorder
        check_receipt_against_log(receipt, events, recorder, recorder.integrity_index(), anchor)
        return events


def check_receipt_served(url: str, receipt: dict[str, Any], public_key: Any,
                         anchor: Checkpoint | None = None, policy: Any = None
                         ) -> tuple[list[dict[str, Any]], Checkpoint]:
    """``check_receipt`` against the ledger served at ``url`` (its HTTP API), without its
    database: the receipt's events, and the signed checkpoint they were found under (the
    server's own, accepted under ``policy``, when no ``anchor`` is given)."""
    from ledger.remote.client import Remote
    from ledger.remote.receipts import check_receipt_served as check
    from ledger.trust.receipt import check_signature

    events = check_signature(receipt, public_key)
    return events, check(Remote(url), receipt, events, public_key, anchor, policy)


def _acceptor(url: str, public_key: Any, policy: Any) -> Callable[[str], Checkpoint]:
    """The mirror's test of a served checkpoint: ``verify``'s (the log's signature, a witness
    quorum); one that fails it is the source's failure (exit 1), not the user's."""
    from ledger.store.replica import MirrorFailed
    from ledger.trust.accept import accept_checkpoint
    from ledger.trust.checkpoint import BadCheckpoint

    def accept(note: str) -> Checkpoint:
        try:
            return accept_checkpoint(note, public_key, policy)
        except BadCheckpoint as error:
            raise MirrorFailed(f"{url}/v1/checkpoint: {error}; nothing stored") from None

    return accept


def open_event_store(location: Location, *, must_exist: bool = False) -> Ledger:
    """The event store at ``location``, with failures to reach it said in one line."""
    from eventsourcing.persistence import PersistenceError

    from ledger.store.application import Ledger

    if must_exist and not location.is_postgres and not Path(location.db).exists():
        raise BadInput(f"no ledger at {location.db}; append events first (ledger append FILE)")
    if location.is_postgres:
        from ledger.store.reachable import postgres_problem

        if (problem := postgres_problem(location)) is not None:
            raise Failure(f"cannot use the ledger at {location.describe()}: {problem}")
    try:
        return Ledger(location)
    except PersistenceError as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Failure(f"cannot use the ledger at {location.describe()}: {detail}") from None
    except sqlite3.DatabaseError as error:
        raise Failure(f"cannot open {location.describe()}: {error}") from None

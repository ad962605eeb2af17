"""What each ``ledger`` command does, between argument parsing and printing."""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from ledger import progress
from ledger.config import Location, locate
from ledger.errors import BadInput, Failure
from ledger.reader import Line, read_lines
from ledger.render import as_json, csv_text, table

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ledger.application import Ledger


@contextmanager
def open_ledger(location: Location, *, must_exist: bool = False) -> Iterator[Ledger]:
    """The ledger at ``location``, closed (connection pools and all) when done."""
    from eventsourcing.persistence import PersistenceError

    from ledger.application import Ledger

    if must_exist and not location.is_postgres and not Path(location.db).exists():
        raise BadInput(f"no ledger at {location.db}; append events first (ledger append FILE)")
    if location.is_postgres:
        from ledger.reachable import postgres_problem

        if (problem := postgres_problem(location)) is not None:
            raise Failure(f"cannot use the ledger at {location.describe()}: {problem}")
    try:
        ledger = Ledger(location)
    except PersistenceError as error:
        raise Failure(_unreachable(location, error)) from None
    except sqlite3.DatabaseError as error:
        raise Failure(f"cannot open {location.describe()}: {error}") from None
    try:
        yield ledger
    finally:
        ledger.close()


def _unreachable(location: Location, error: Exception) -> str:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot use the ledger at {location.describe()}: {detail}"


def _readable(name: str) -> Path:
    """An input file named on the command line, or ``BadInput`` saying why not."""
    path = Path(name)
    try:
        if path.is_dir():
            raise BadInput(f"{name}: is a directory, not a file")
        if not path.is_file():
            raise BadInput(f"{name}: no such file")
    except OSError as error:  # e.g. a name too long for the file system
        raise BadInput(f"{name}: {error.strerror}") from None
    return path


def _writable(name: str, option: str, location: Location | None = None) -> Path:
    """An output file named on the command line: never the ledger or its read models."""
    path = Path(name)
    if not name or path.name in ("", ".", ".."):
        raise BadInput(f"{option}: {name!r} does not name a file")
    if len(os.fsencode(path.name)) > 255:
        raise BadInput(f"{option}: the file name is too long")
    if not path.parent.is_dir():
        raise BadInput(f"{option}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise BadInput(f"{option}: {name} is a directory")
    if location is not None:
        protected = [location.read_models_path()]
        if not location.is_postgres:
            protected.append(Path(location.db))
        for base in protected:
            for suffix in ("", "-wal", "-shm", "-journal"):
                kept = base.with_name(base.name + suffix)
                if os.path.realpath(path) == os.path.realpath(kept):
                    raise BadInput(f"{option}: {name} is part of the ledger; choose another file")
    return path


@contextmanager
def _input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    path = _readable(name)
    try:
        stream = path.open("rb")
    except PermissionError:
        raise BadInput(f"{name}: permission denied") from None
    with stream:
        yield stream


def _bulk() -> None:
    """This process is about to allocate many small objects and then exit: the cycle
    collector would only re-scan them (about a tenth of append time)."""
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


def append(args: argparse.Namespace) -> int:
    if args.skip_invalid and not args.rejects:
        raise BadInput("--skip-invalid needs --rejects FILE to keep the lines it skips")
    if args.rejects and not args.skip_invalid:
        raise BadInput("--rejects goes with --skip-invalid")
    with _input(args.file) as stream:
        size = None if args.file == "-" else Path(args.file).stat().st_size
        return _append_lines(
            args, lambda: progress.lines(read_lines(stream), total_bytes=size, what="append")
        )


def _append_lines(args: argparse.Namespace, lines: Callable[[], Iterable[Line]]) -> int:
    """Append, report and catch the read models up: shared by `append` and `import`."""
    from ledger.application import BatchRejected
    from ledger.store import LedgerBusy

    _bulk()
    skip_invalid = getattr(args, "skip_invalid", False)
    rejects = getattr(args, "rejects", None)
    location = locate(args.db)
    # Opened before anything is stored: a rejects file that cannot be written must not
    # cost the rejected lines after the good ones were committed.
    rejected_out = _writable(rejects, "--rejects", location).open("wb") if rejects else None
    with open_ledger(location) as ledger, rejected_out or nullcontext():
        try:
            appended = ledger.append(lines(), skip_invalid=skip_invalid)
        except BatchRejected as rejected:
            for problem in rejected.outcome.problems[:MAX_PROBLEMS_SHOWN]:
                print(problem, file=sys.stderr)
            hidden = rejected.outcome.problem_count - MAX_PROBLEMS_SHOWN
            if hidden > 0:
                print(f"... and {hidden} more problem(s)", file=sys.stderr)
            print("nothing was appended: fix the lines above and try again", file=sys.stderr)
            return 2
        except LedgerBusy as busy:
            raise Failure(str(busy)) from None
        outcome = appended.outcome
        if rejected_out is not None:
            _write_rejects(rejected_out, outcome)
        try:
            caught_up: int | str = _refresh_read_models(location, ledger)
        except sqlite3.OperationalError as busy:
            # The batch is committed; the models catch up at the next query.
            caught_up = f"not yet ({busy}); they catch up at the next query"
    summary = {
        "appended": appended.count,
        "first_position": appended.first_position,
        "last_position": appended.last_position,
        "already_recorded": outcome.already_recorded,
        "rejected": outcome.rejected_count if skip_invalid else 0,
        "flagged": [str(problem) for problem in outcome.flagged],
        "read_models_updated": caught_up,
    }
    if args.format == "json":
        print(as_json(summary))
        return 0
    span = (f" (positions {summary['first_position']}-{summary['last_position']})"
            if appended.count else "")
    print(f"appended {summary['appended']} event(s){span}; "
          f"{outcome.already_recorded} already recorded (no-op); "
          f"{len({p.line for p in outcome.flagged})} flagged by control checks"
          + (f"; {summary['rejected']} rejected, see {rejects}" if rejects else ""))
    for problem in outcome.flagged[:MAX_PROBLEMS_SHOWN]:
        print(f"flagged (recorded as issued): {problem}", file=sys.stderr)
    if isinstance(caught_up, str):
        print(f"note: read models {caught_up}", file=sys.stderr)
    return 0


MAX_PROBLEMS_SHOWN = 50


def _write_rejects(out: IO[bytes], outcome: Any) -> None:
    encoder = msgspec.json.Encoder()
    for line, problems in outcome.rejected_lines:
        reasons = [f"{p.field}: {p.reason}" if p.field else p.reason for p in problems]
        record = {"line": line.number, "reasons": reasons,
                  "text": line.text.decode("utf-8", "replace")}
        out.write(encoder.encode(record) + b"\n")


def _refresh_read_models(location: Location, ledger: Ledger) -> int:
    from projections.apply import catch_up, rebuild
    from projections.schema import (
        SCHEMA_VERSION,
        applied_position,
        open_read_models,
        schema_version,
    )

    path = location.read_models_path()
    db = open_read_models(path)
    try:
        if applied_position(db) > 0 and schema_version(db) == SCHEMA_VERSION:
            return catch_up(db, ledger)
    finally:
        db.conn.close()
    # A first load is a rebuild (bulk-loaded, then indexed, instead of row by indexed row);
    # so is a model of an older shape.
    return rebuild(path, ledger)


@contextmanager
def _read_model_file(path: Path) -> Iterator[None]:
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


def replay(args: argparse.Namespace) -> int:
    from projections.apply import rebuild

    _bulk()
    location = locate(args.db)
    with open_ledger(location, must_exist=True) as ledger, \
            _read_model_file(location.read_models_path()):
        count = rebuild(location.read_models_path(), progress.CountedLog(ledger, "replay"))
    print(f"rebuilt the read models from {count} event(s) into {location.read_models_path()}")
    return 0


@contextmanager
def read_models(args: argparse.Namespace) -> Iterator[Any]:
    """The read models, caught up with the log first so answers are current.

    When a SQLite ledger's head equals the models' position, the event store is not even
    opened: a query then costs its SQL and little else.
    """
    from ledger.head import sqlite_head
    from projections.schema import SCHEMA_VERSION, applied_position, connect, schema_version

    location = locate(args.db)
    path = location.read_models_path()
    current = False
    if not location.is_postgres and Path(location.db).exists() and path.exists():
        head = sqlite_head(location.db)
        with closing(connect(path)) as db:
            try:
                current = (head is not None and applied_position(db) == head
                           and schema_version(db) == SCHEMA_VERSION)
            except sqlite3.Error:
                current = False
    if not current:
        with open_ledger(location, must_exist=True) as ledger, _read_model_file(path):
            _refresh_read_models(location, ledger)
    with closing(connect(path)) as db:
        yield db


def _moment(args: argparse.Namespace) -> Any:
    from projections.moment import BadMoment, moment

    try:
        return moment(args.as_of, args.known_at)
    except BadMoment as error:
        raise BadInput(str(error)) from None


@contextmanager
def _query() -> Iterator[None]:
    from projections.tally import QueryError

    try:
        yield
    except QueryError as error:
        raise BadInput(str(error)) from None


def list_elections(args: argparse.Namespace) -> int:
    from projections.tally import elections

    moment = _moment(args)
    with read_models(args) as db:
        found = elections(db, moment, args.election)
    return _print({"elections": found}, args.format, rows=found)


def history(args: argparse.Namespace) -> int:
    from projections.audit import history as events_of

    moment = _moment(args)
    with read_models(args) as db, _query():
        events = events_of(db, moment, election=args.election, station=args.station)
    rows = [
        {k: e[k] for k in ("position", "recorded_at", "occurred_at", "type", "election",
                           "station", "event_id")}
        for e in events
    ]
    return _print({"events": events}, args.format, rows=rows)


def tally(args: argparse.Namespace) -> int:
    from projections.tally import load_election
    from projections.tally import tally as compute

    moment = _moment(args)
    with read_models(args) as db, _query():
        election = load_election(db, args.election)
        result = compute(db, election, moment, stage=args.stage, reporter=args.reporter,
                         scope=args.scope)
    rows = [
        {"choice": c, "name": result["names"][c], "votes": v, "share_pct": result["shares"][c],
         "passes": c in result["passing"]}
        for c, v in result["votes"].items()
    ]
    header = (
        f"{result['stage']} tally of {result['election']} by {result['reporter']} "
        f"({result['scope']}): {result['stations_reporting']}/{result['stations_total']} "
        f"stations, turnout {_pct(result['turnout_pct'])}, valid {result['valid_votes']}, "
        f"invalid {result['invalid']}, status {result['status']}"
    )
    return _print(result, args.format, rows=rows, header=header)


def seats(args: argparse.Namespace) -> int:
    from projections.tally import load_election
    from projections.tally import seats as allocate

    moment = _moment(args)
    with read_models(args) as db, _query():
        election = load_election(db, args.election)
        result = allocate(db, election, moment, stage=args.stage, reporter=args.reporter,
                          scope=args.scope)
    rows = [
        {"choice": c, "name": result["names"][c], "votes": result["votes"].get(c, 0),
         "passes": c in result["passing"], "seats": n}
        for c, n in result["seats"].items()
    ]
    header = (f"{result['seats_total']} seats by {result['method']}, threshold "
              f"{result['threshold_pct']}% of {result['threshold_base']} votes = "
              f"{result['threshold_votes_exact']} votes ({result['votes_to_pass']} to pass); "
              f"status {result['status']}")
    for tie in result["ties"]:
        header += f"\ntie: {tie}"
    return _print(result, args.format, rows=rows, header=header)


def audit(args: argparse.Namespace) -> int:
    from projections.audit import audit as build

    moment = _moment(args)
    with read_models(args) as db, _query():
        result = build(db, moment, election=args.election, station=args.station)
    return _print_sections(result, args.format)


def withheld(args: argparse.Namespace) -> int:
    from projections.audit import withheld as build

    moment = _moment(args)
    with read_models(args) as db, _query():
        result = build(db, moment, election=args.election)
    return _print_sections(result, args.format)


def appeals(args: argparse.Namespace) -> int:
    from projections.audit import appeals as build

    moment = _moment(args)
    with read_models(args) as db, _query():
        result = build(db, moment, election=args.election)
    return _print({"appeals": result}, args.format, rows=result)


def checkpoint(args: argparse.Namespace) -> int:
    from ledger.checkpoint import load_private_key, sign
    from ledger.integrity import checkpoint_of
    from ledger.store import utc_now

    key = load_private_key(Path(args.key)) if args.key else None
    with open_ledger(locate(args.db), must_exist=True) as ledger:
        tree = ledger.recorder.tree()
        note = checkpoint_of(tree)
        if key is not None:
            note = sign(note, key, args.name or note.origin)
        tree.record_checkpoint(note.size, note.root, utc_now().isoformat(), note.text())
    sys.stdout.write(note.text())
    return 0


def verify(args: argparse.Namespace) -> int:
    from ledger.checkpoint import BadCheckpoint, load_public_key, read_checkpoint
    from ledger.checkpoint import verify_signature as verify_note
    from ledger.integrity import IntegrityFailure
    from ledger.integrity import verify as verify_log

    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    if args.public_key and note is None:
        raise BadInput("--public-key needs --checkpoint FILE to check a signature on")
    signer = None
    if note is not None and args.public_key:
        try:
            signer = verify_note(note, load_public_key(Path(args.public_key)))
        except BadCheckpoint as error:
            return _broken(f"checkpoint {args.checkpoint}: {error}")
    with open_ledger(locate(args.db), must_exist=True) as ledger:
        try:
            verified = verify_log(ledger.recorder, ledger.recorder.tree(), note)
        except IntegrityFailure as failure:
            return _broken(str(failure))
    import base64

    message = f"ok: {verified.size} events intact, root {base64.b64encode(verified.root).decode()}"
    if note is not None:
        message += f"; extends the checkpoint of {note.size} events"
        message += f", signed by {signer}" if signer else " (signature not checked)"
    print(message)
    return 0


def _broken(message: str) -> int:
    print(f"ledger verify: FAILED: {message}", file=sys.stderr)
    return 1


def prove(args: argparse.Namespace) -> int:
    from ledger.checkpoint import read_checkpoint
    from ledger.integrity import IntegrityFailure, inclusion_proof

    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    with open_ledger(locate(args.db), must_exist=True) as ledger:
        try:
            proof = inclusion_proof(ledger.recorder, ledger.recorder.tree(), args.event_id, note)
        except LookupError as error:
            raise BadInput(str(error).strip('"')) from None
        except IntegrityFailure as failure:
            return _broken(str(failure))
    print(as_json(proof))
    return 0


def check_proof(args: argparse.Namespace) -> int:
    from ledger.checkpoint import load_public_key, read_checkpoint, verify_signature
    from ledger.integrity import check_proof as check
    from ledger.merkle import ProofError

    try:
        proof = msgspec.json.decode(Path(args.proof).read_bytes())
    except (OSError, msgspec.DecodeError) as error:
        raise BadInput(f"{args.proof}: not a readable proof ({error})") from None
    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    if args.public_key:
        if note is None:
            raise BadInput("--public-key needs --checkpoint FILE to check a signature on")
        verify_signature(note, load_public_key(Path(args.public_key)))
    try:
        entry = check(proof, note)
    except ProofError as error:
        print(f"ledger check-proof: FAILED: {error}", file=sys.stderr)
        return 1
    header = entry.split(b"\n", 5)
    anchor = "the checkpoint" if note else "the root in the proof (no checkpoint given)"
    print(f"ok: event {_proved_event_id(header[-1])} at position {header[1].decode()} is leaf "
          f"{proof['leaf_index']} of the log of {proof['tree_size']} events, under {anchor}")
    return 0


def _proved_event_id(payload: bytes) -> str:
    """The event_id inside the proved entry itself: the proof's own ``event_id`` field is
    not covered by the hashes, so it is not what was proved."""
    from ledger.store import decode_payload

    try:
        return repr(decode_payload(payload).event.event_id)
    except (msgspec.DecodeError, AttributeError):
        return "(event_id unreadable)"


def keygen(args: argparse.Namespace) -> int:
    from ledger.checkpoint import generate_key_pair

    prefix = _writable(args.prefix, "PREFIX", locate(args.db))
    for made in (prefix.with_suffix(".key"), prefix.with_suffix(".pub")):
        _writable(str(made), "PREFIX", locate(args.db))
    if prefix.with_suffix(".key").exists():
        raise BadInput(f"{prefix.with_suffix('.key')} exists; not overwriting a key")
    secret, public = generate_key_pair(prefix)
    print(f"wrote {secret} (keep it secret) and {public} (publish it)")
    return 0


def export(args: argparse.Namespace) -> int:
    from projections.nist import election_report
    from projections.tally import load_election

    moment = _moment(args)
    with read_models(args) as db, _query():
        report = election_report(db, load_election(db, args.election), moment, stage=args.stage)
    print(as_json(report))
    return 0


def import_dataset(args: argparse.Namespace) -> int:
    from ledger.openelections import read_openelections

    path = _readable(args.file)
    return _append_lines(args, lambda: progress.lines(
        read_openelections(path, occurred_at=args.occurred_at, authority=args.authority),
        total_bytes=path.stat().st_size, what="import"))


def report(args: argparse.Namespace) -> int:
    from projections.report import render_report
    from projections.tally import load_election

    out = _writable(args.out, "--out", locate(args.db))
    moment = _moment(args)
    with read_models(args) as db, _query():
        html = render_report(db, load_election(db, args.election), moment)
    out.write_text(html, encoding="utf-8")
    print(f"wrote {out} ({len(html) // 1024} KiB)")
    return 0


def demo(args: argparse.Namespace) -> int:
    from ledger.demo import run

    if args.db:
        # Silently building somewhere else than asked would be worse than refusing.
        raise BadInput("demo builds its own fresh ledger in --dir (default ./ledger-demo); "
                       "it does not take --db")
    return run(Path(args.dir or "ledger-demo"), stations=args.stations)


def _print(result: dict[str, Any], fmt: str, *, rows: list[dict[str, Any]],
           header: str | None = None) -> int:
    if fmt == "json":
        print(as_json(result))
    elif fmt == "csv":
        text = csv_text(rows)
        if text:
            print(text)
    else:
        if header:
            print(header)
        print(table(rows))
    return 0


def _print_sections(result: dict[str, Any], fmt: str) -> int:
    """Audit views are several tables; JSON keeps them as one object."""
    if fmt == "json":
        print(as_json(result))
        return 0
    first = True
    for name, value in result.items():
        if not isinstance(value, list):
            continue
        if fmt == "csv":
            if value:
                print(f"# {name}")
                print(csv_text(value))
            continue
        if not first:
            print()
        first = False
        print(f"== {name.replace('_', ' ')} ({len(value)})")
        print(table(value))
    if fmt == "table":
        for name, value in result.items():
            if isinstance(value, dict) and name != "moment":
                print(f"\n== {name.replace('_', ' ')}")
                print(table([value]))
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def explain_failure(error: Exception) -> str:
    """One line for an unexpected failure, naming what a user can act on."""
    try:
        from eventsourcing.persistence import PersistenceError
    except ImportError:  # pragma: no cover
        PersistenceError = ()  # type: ignore[assignment,misc]
    if isinstance(error, PersistenceError | sqlite3.DatabaseError):
        return f"database error: {error}".splitlines()[0]
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    return f"unexpected {type(error).__name__}: {error} (set LEDGER_DEBUG=1 for details)"

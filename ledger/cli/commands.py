"""The command line's adapter: arguments in, one call to the application layer, text out.

Every ``ledger`` command is a function of the parsed arguments that asks ``LedgerService``
(``ledger.service``) and renders what it returns as a table, JSON or CSV. What the ledger
does lives there; this module only decides how it reads on a terminal.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ledger.cli import progress
from ledger.cli.render import as_json, csv_text, table
from ledger.errors import BadInput
from ledger.service import LedgerService, MapRefused, Receipt, Refused, when
from ledger.store.config import Location, locate

if TYPE_CHECKING:  # the event schemas load only when a command reads events
    from ledger.input.reader import Line
    from ledger.trust.cosigned import Cosigned

MAX_PROBLEMS_SHOWN = 50


# -- files named on the command line ---------------------------------------------------------


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


def _short_lived_process() -> None:
    """This process is about to allocate many small objects and then exit: the cycle
    collector would only re-scan them (about a tenth of append time)."""
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[LedgerService]:
    with LedgerService(locate(args.db)) as service:
        yield service


def _moment(args: argparse.Namespace) -> Any:
    return when(getattr(args, "as_of", None), getattr(args, "known_at", None))


# -- writing ---------------------------------------------------------------------------------


def _skipping(args: argparse.Namespace) -> None:
    """--skip-invalid and --rejects go together (append, import csv)."""
    if args.skip_invalid and not args.rejects:
        raise BadInput("--skip-invalid needs --rejects FILE to keep the lines it skips")
    if args.rejects and not args.skip_invalid:
        raise BadInput("--rejects goes with --skip-invalid")


def append(args: argparse.Namespace) -> int:
    from ledger.input.reader import read_lines

    _skipping(args)
    with _input(args.file) as stream:
        size = None if args.file == "-" else Path(args.file).stat().st_size
        return _append_lines(args, progress.lines(read_lines(stream), total_bytes=size,
                                                  what="append"))


def import_dataset(args: argparse.Namespace) -> int:
    from ledger.input.openelections import read_openelections

    if args.dataset_format == "csv":
        return import_csv(args)
    if args.map:
        raise BadInput("--map goes with import csv")
    if args.skip_invalid or args.rejects:
        raise BadInput("--skip-invalid and --rejects go with import csv (or append)")
    path = _readable(args.file)
    return _append_lines(args, progress.lines(
        read_openelections(path, occurred_at=args.occurred_at, authority=args.authority),
        total_bytes=path.stat().st_size, what="import"))


def import_csv(args: argparse.Namespace) -> int:
    from ledger.input.station_table import load_map

    if not args.map:
        raise BadInput("import csv needs --map MAP.toml (see docs/real-data.md)")
    _skipping(args)
    path, table_map = _readable(args.file), load_map(_readable(args.map))
    with _service(args) as service:
        try:
            table = service.station_table(path, table_map)
        except MapRefused as refused:
            for problem in refused.problems:
                print(problem, file=sys.stderr)
            print("nothing was appended: fix the map and try again", file=sys.stderr)
            return 2
    return _append_lines(args, progress.lines(table, total_bytes=path.stat().st_size,
                                              what="import"),
                         write_rejects=lambda out, outcome: _write_rejected_rows(
                             out, outcome, table.header))


def _append_lines(args: argparse.Namespace, lines: Iterable[Line],
                  write_rejects: Callable[[IO[bytes], Any], None] | None = None) -> int:
    """Append and report: shared by `append` and `import`."""
    _short_lived_process()
    skip_invalid = getattr(args, "skip_invalid", False)
    rejects = getattr(args, "rejects", None)
    location = locate(args.db)
    # Opened before anything is stored: a rejects file that cannot be written must not
    # cost the rejected lines after the good ones were committed.
    rejected_out = _writable(rejects, "--rejects", location).open("wb") if rejects else None
    with LedgerService(location) as service, rejected_out or nullcontext():
        try:
            receipt = service.append(lines, skip_invalid=skip_invalid)
        except Refused as refused:
            _print_refusal(refused)
            return 2
        if rejected_out is not None:
            (write_rejects or _write_rejects)(rejected_out, receipt.outcome)
    if args.format == "json":
        print(as_json(receipt.summary()))
        return 0
    _print_receipt(receipt, rejects)
    return 0


def _print_refusal(refused: Refused) -> None:
    for problem in refused.problems[:MAX_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    hidden = refused.outcome.problem_count - MAX_PROBLEMS_SHOWN
    if hidden > 0:
        print(f"... and {hidden} more problem(s)", file=sys.stderr)
    print("nothing was appended: fix the lines above and try again", file=sys.stderr)


def _print_receipt(receipt: Receipt, rejects: str | None) -> None:
    span = (f" (positions {receipt.first_position}-{receipt.last_position})"
            if receipt.appended else "")
    print(f"appended {receipt.appended} event(s){span}; "
          f"{receipt.already_recorded} already recorded (no-op); "
          f"{len({p.line for p in receipt.flagged})} flagged by control checks"
          + (f"; {receipt.rejected} rejected, see {rejects}" if rejects else ""))
    for problem in receipt.flagged[:MAX_PROBLEMS_SHOWN]:
        print(f"flagged (recorded as issued): {problem}", file=sys.stderr)
    if isinstance(receipt.read_models_updated, str):
        print(f"note: read models {receipt.read_models_updated}", file=sys.stderr)


def _write_rejects(out: IO[bytes], outcome: Any) -> None:
    import msgspec

    encoder = msgspec.json.Encoder()
    for line, problems in outcome.rejected_lines:
        reasons = [f"{p.field}: {p.reason}" if p.field else p.reason for p in problems]
        record = {"line": line.number, "reasons": reasons,
                  "text": line.text.decode("utf-8", "replace")}
        out.write(encoder.encode(record) + b"\n")


def _write_rejected_rows(out: IO[bytes], outcome: Any, header: list[str]) -> None:
    """A station table's refused rows as CSV: the line number, the reasons, then the row's
    own cells under the table's header, so the file can be fixed and imported again with
    the same map."""
    import csv
    import io

    reasons: dict[int, list[str]] = {}
    texts: dict[int, bytes] = {}
    for line, problems in outcome.rejected_lines:
        kept = reasons.setdefault(line.number, [])
        kept += [str(p).removeprefix(f"line {line.number}: ") for p in problems]
        if line.text:
            texts.setdefault(line.number, line.text)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["line", "reason", *header])
    for number, why in reasons.items():
        cells = next(csv.reader([texts[number].decode("utf-8", "replace")])) if number in texts else []
        writer.writerow([number, "; ".join(dict.fromkeys(why)), *cells])
    out.write(text.getvalue().encode("utf-8"))


def replay(args: argparse.Namespace) -> int:
    _short_lived_process()
    with _service(args) as service:
        count = service.replay(lambda log: progress.CountedLog(log, "replay"))
        path = service.location.read_models_path()
    print(f"rebuilt the read models from {count} event(s) into {path}")
    return 0


# -- questions -------------------------------------------------------------------------------


def list_elections(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        found = service.elections(moment, election=args.election)
    return _print({"elections": found}, args.format, rows=found)


def history(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        events = service.history(moment, election=args.election, station=args.station)
    rows = [
        {k: e[k] for k in ("position", "recorded_at", "occurred_at", "type", "election",
                           "station", "event_id", "signed_by", "signing_key")}
        | {"occurred_at_as_submitted": e["occurred_at_as_submitted"]}
        for e in events
    ]
    return _print({"events": events}, args.format, rows=rows)


def tally(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.tally(moment, election=args.election, stage=args.stage,
                               reporter=args.reporter, scope=args.scope)
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
    moment = _moment(args)
    with _service(args) as service:
        result = service.seats(moment, election=args.election, stage=args.stage,
                               reporter=args.reporter, scope=args.scope)
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


def forensics(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.forensics(moment, election=args.election, stage=args.stage,
                                   reporter=args.reporter, scope=args.scope, choice=args.choice)
    rows = [{"percent": k, "turnout_stations": turnout, "share_stations": share}
            for k, (turnout, share) in enumerate(zip(result["turnout_percent"],
                                                     result["share_percent"], strict=True))]
    integer = result["integer_turnout"]
    chi = result["chi_square"]
    header = (
        f"forensics of the {result['stage']} tally of {result['election']} by "
        f"{result['reporter']} ({result['scope']}): {result['stations']} stations, share of "
        f"{result['choice']} ({result['name']})\n"
        f"stations at a whole turnout percentage: {integer['observed']} "
        f"(expected by chance {integer['expected']:.1f})\n"
        f"last digits 0-9 of vote counts >= 10: {result['last_digits']}, chi-square "
        + (f"{chi:.2f} (9 degrees of freedom), p = {result['p_value']:.3g}" if chi is not None
           else "none (no such counts)")
        + f"\nfingerprint: {len(result['fingerprint'])} turnout x share cells (--format json); "
        "percentages below with at least one station"
    )
    if args.format == "table":
        rows = [row for row in rows if row["turnout_stations"] or row["share_stations"]]
    return _print(result, args.format, rows=rows, header=header)


def estimate(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.estimate(moment, election=args.election, stage=args.stage,
                                  reporter=args.reporter, scope=args.scope,
                                  confidence=args.confidence)
    rows = [
        {"choice": c, "name": result["names"][c], "share_pct": _percent(share),
         "low_pct": _percent((result["intervals"][c] or [None])[0]),
         "high_pct": _percent((result["intervals"][c] or [None, None])[1])}
        for c, share in result["shares"].items()
    ]
    turnout = result["turnout"]
    header = (
        f"ESTIMATE of the final result of {result['election']} ({result['stage']} stage) by "
        f"{result['reporter']} ({result['scope']}) from {result['stations_reporting']}/"
        f"{result['stations_total']} stations counted; turnout "
        f"{'unknown' if turnout is None else f'{100 * turnout:.2f}%'}; intervals at "
        f"{100 * result['confidence']:g}%\n{result['method']}\n{result['note']}"
    )
    return _print(result, args.format, rows=rows, header=header)


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 2)


def audit(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.audit(moment, election=args.election, station=args.station)
    return _print_sections(result, args.format)


def withheld(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.withheld(moment, election=args.election)
    return _print_sections(result, args.format)


def appeals(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.appeals(moment, election=args.election)
    return _print({"appeals": result}, args.format, rows=result)


def reporters(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        result = service.reporters(moment, election=args.election)
    rows = [{k: r[k] for k in ("reporter", "role", "name", "protocols", "stations",
                               "withheld_requests", "appeals", "announcements", "decisions",
                               "first_reported_at", "last_reported_at")}
            for r in result["reporters"]]
    events, protocols = result["events"], result["protocols"]
    header = (
        f"reporters of {result['election']} (authority {result['authority']}); "
        f"{events['count']} events occurred {events['first_occurred_at']} to "
        f"{events['last_occurred_at']}, recorded {events['first_recorded_at']} to "
        f"{events['last_recorded_at']}\n{protocols['count']} protocols occurred "
        f"{protocols['first_occurred_at']} to {protocols['last_occurred_at']}, recorded "
        f"{protocols['first_recorded_at']} to {protocols['last_recorded_at']}"
    )
    return _print(result, args.format, rows=rows, header=header)


def export(args: argparse.Namespace) -> int:
    moment = _moment(args)
    with _service(args) as service:
        report = service.nist_report(moment, election=args.election, stage=args.stage)
    print(as_json(report))
    return 0


def report(args: argparse.Namespace) -> int:
    out = _writable(args.out, "--out", locate(args.db))
    moment = _moment(args)
    with _service(args) as service:
        html = service.html_report(moment, election=args.election)
    out.write_text(html, encoding="utf-8")
    print(f"wrote {out} ({len(html) // 1024} KiB)")
    return 0


# -- integrity -------------------------------------------------------------------------------


def checkpoint(args: argparse.Namespace) -> int:
    from ledger.trust.checkpoint import load_private_key

    key = load_private_key(Path(args.key)) if args.key else None
    with _service(args) as service:
        note = service.checkpoint(key, args.name)
    sys.stdout.write(note.text())
    return 0


def verify(args: argparse.Namespace) -> int:
    from ledger.store.integrity import IntegrityFailure
    from ledger.trust.checkpoint import BadCheckpoint, load_public_key, read_checkpoint
    from ledger.trust.checkpoint import verify_signature as verify_note

    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    if args.public_key and note is None:
        raise BadInput("--public-key needs --checkpoint FILE to check a signature on")
    signer = None
    if note is not None and args.public_key:
        try:
            signer = verify_note(note, load_public_key(Path(args.public_key)))
        except BadCheckpoint as error:
            return _broken(f"checkpoint {args.checkpoint}: {error}")
    witnessed = _witnessed(args)
    if witnessed is not None and not witnessed.ok:
        return _broken(f"checkpoint {args.checkpoint}: {witnessed.summary()}")
    with _service(args) as service:
        try:
            verified = service.verify(note)
        except IntegrityFailure as failure:
            return _broken(str(failure))
    message = f"ok: {verified.size} events intact, root {base64.b64encode(verified.root).decode()}"
    if note is not None:
        message += f"; extends the checkpoint of {note.size} events"
        message += f", signed by {signer}" if signer else " (signature not checked)"
    if witnessed is not None:
        message += f"; {witnessed.summary()}"
    print(message)
    return 0


def _witnessed(args: argparse.Namespace) -> Cosigned | None:
    """With ``--witnesses``: the checkpoint's log signature and cosignatures, counted against
    the policy's quorum (the caller refuses it unless ``.ok``)."""
    if not getattr(args, "witnesses", None):
        return None
    from ledger.trust.checkpoint import load_public_key
    from ledger.trust.cosigned import check_cosigned
    from ledger.trust.policy import read_policy

    if not args.checkpoint or not args.public_key:
        raise BadInput("--witnesses needs --checkpoint FILE and --public-key LOG.pub: a "
                       "checkpoint counts only with the log's signature and the quorum's")
    policy = read_policy(Path(args.witnesses))
    text = _readable(args.checkpoint).read_text(encoding="utf-8", errors="replace")
    return check_cosigned(text, load_public_key(Path(args.public_key)), policy)


def _broken(message: str) -> int:
    print(f"ledger verify: FAILED: {message}", file=sys.stderr)
    return 1


def prove(args: argparse.Namespace) -> int:
    from ledger.store.integrity import IntegrityFailure
    from ledger.trust.checkpoint import read_checkpoint

    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    with _service(args) as service:
        try:
            proof = service.prove(args.event_id, note)
        except IntegrityFailure as failure:
            return _broken(str(failure))
    print(as_json(proof))
    return 0


def check_proof(args: argparse.Namespace) -> int:
    import msgspec

    from ledger.store.integrity import check_proof as check
    from ledger.trust.checkpoint import load_public_key, read_checkpoint, verify_signature
    from ledger.trust.merkle import ProofError

    try:
        proof = msgspec.json.decode(Path(args.proof).read_bytes())
    except (OSError, msgspec.DecodeError) as error:
        raise BadInput(f"{args.proof}: not a readable proof ({error})") from None
    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    if args.public_key:
        if note is None:
            raise BadInput("--public-key needs --checkpoint FILE to check a signature on")
        verify_signature(note, load_public_key(Path(args.public_key)))
    witnessed = _witnessed(args)
    if witnessed is not None and not witnessed.ok:
        print(f"ledger check-proof: FAILED: checkpoint {args.checkpoint}: {witnessed.summary()}",
              file=sys.stderr)
        return 1
    try:
        entry = check(proof, note)
    except ProofError as error:
        print(f"ledger check-proof: FAILED: {error}", file=sys.stderr)
        return 1
    header = entry.split(b"\n", 5)
    anchor = "the checkpoint" if note else "the root in the proof (no checkpoint given)"
    witnesses = f"; {witnessed.summary()}" if witnessed is not None else ""
    print(f"ok: event {_proved_event_id(header[-1])} at position {header[1].decode()} is leaf "
          f"{proof['leaf_index']} of the log of {proof['tree_size']} events, under {anchor}"
          f"{witnesses}")
    return 0


def _proved_event_id(payload: bytes) -> str:
    """The event_id inside the proved entry itself: the proof's own ``event_id`` field is
    not covered by the hashes, so it is not what was proved."""
    import msgspec

    from ledger.store.codec import decode_payload

    try:
        return repr(decode_payload(payload).event.event_id)
    except (msgspec.DecodeError, AttributeError):
        return "(event_id unreadable)"


def check_receipt(args: argparse.Namespace) -> int:
    import msgspec

    from ledger.trust.checkpoint import load_public_key, read_checkpoint
    from ledger.trust.receipt import BadReceipt

    try:
        receipt = msgspec.json.decode(_readable(args.receipt).read_bytes())
    except msgspec.DecodeError as error:
        raise BadInput(f"{args.receipt}: not JSON ({error})") from None
    if isinstance(receipt, dict) and isinstance(receipt.get("receipt"), dict):
        receipt = receipt["receipt"]  # the whole answer of POST /v1/events
    note = read_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    url = args.url or (args.db if args.db and args.db.startswith(("http://", "https://")) else None)
    # Against a served ledger, without --checkpoint, the server's own checkpoint is used: the
    # policy then applies to it.
    witnessed = _witnessed(args) if url is None or args.checkpoint else None
    if witnessed is not None and not witnessed.ok:
        print(f"ledger check-receipt: FAILED: checkpoint {args.checkpoint}: {witnessed.summary()}",
              file=sys.stderr)
        return 1
    if url is not None:
        policy = _policy(args.witnesses) if args.witnesses and not args.checkpoint else None
        return _check_receipt_served(url, receipt, Path(args.public_key), note, policy)
    with _service(args) as service:
        try:
            events = service.check_receipt(receipt, load_public_key(Path(args.public_key)), note)
        except BadReceipt as error:
            print(f"ledger check-receipt: FAILED: {error}", file=sys.stderr)
            return 1
    anchor = f" and in the checkpoint of {note.size} events" if note else ""
    anchor += f"; {witnessed.summary()}" if witnessed is not None else ""
    print(f"ok: {len(events)} event(s) receipted by the ledger's key are in the log at their "
          f"positions{anchor}")
    return 0


def _check_receipt_served(url: str, receipt: Any, public_key: Path, note: Any,
                          policy: Any) -> int:
    from ledger.service import check_receipt_served
    from ledger.trust.checkpoint import load_public_key
    from ledger.trust.receipt import BadReceipt

    try:
        events, anchor = check_receipt_served(url, receipt, load_public_key(public_key), note,
                                              policy)
    except BadReceipt as error:
        print(f"ledger check-receipt: FAILED: {error}", file=sys.stderr)
        return 1
    whose = "the checkpoint given" if note else f"the checkpoint {url} publishes"
    quorum = ", and cosigned to the witnesses' quorum" if policy is not None else ""
    print(f"ok: {len(events)} event(s) receipted by the ledger's key are in the log served at "
          f"{url} at their positions, and in {whose} ({anchor.size} events, signed by its "
          f"key{quorum})")
    return 0


def mirror(args: argparse.Namespace) -> int:
    from ledger.store.replica import Mirrored, SplitView
    from ledger.trust.checkpoint import load_public_key

    location = locate(args.db)
    key = load_public_key(Path(_readable(args.public_key)))
    policy = _policy(args.witnesses) if args.witnesses else None
    evidence = _writable(args.evidence, "--evidence", location) if args.evidence else None

    def said(mirrored: Mirrored) -> str:
        return (f"size {mirrored.size}, root {base64.b64encode(mirrored.root).decode()}, "
                f"{mirrored.added} event(s) added")

    def followed(mirrored: Mirrored) -> None:
        lag = mirrored.lag
        print(f"{said(mirrored)}, lag {lag:.2f} s" if lag is not None else said(mirrored),
              flush=True)

    def unreachable(reason: str, retry: float) -> None:
        print(f"ledger mirror: {reason}; trying again in {retry:g} s", file=sys.stderr, flush=True)

    with LedgerService(location) as service, progress.Ticks("mirror") as tick:
        try:
            if args.follow:
                service.follow(args.url, key, policy, report=followed, unreachable=unreachable,
                               tick=tick)
                return 0
            print(said(service.mirror(args.url, key, policy, tick=tick)))
        except SplitView as split:
            path = evidence or _writable(f"split-view-{split.size}.json", "--evidence", location)
            path.write_text(as_json(split.evidence) + "\n", encoding="utf-8")
            print(f"{split}; evidence written to {path}", file=sys.stderr)
            return 1
    return 0


def _policy(path: str) -> Any:
    """The witness policy file (C2SP tlog-policy); exit 2 naming each bad line."""
    from ledger.trust.policy import read_policy

    return read_policy(_readable(path))


def check_evidence(args: argparse.Namespace) -> int:
    import json

    from ledger.trust.checkpoint import load_public_key
    from ledger.trust.evidence import NotProven, check

    key = load_public_key(Path(_readable(args.public_key)))
    text = _readable(args.evidence).read_bytes()
    try:
        proven = check(json.loads(text), key)
    except (ValueError, RecursionError) as error:
        reason = str(error) if isinstance(error, NotProven) else f"not JSON ({error})"
        print(f"ledger check-evidence: NOT PROVEN: {reason}", file=sys.stderr)
        return 1
    print(f"ok: {proven}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from ledger.http.server import serve as run

    if args.witnesses and not args.key:
        raise BadInput("--witnesses needs --key: witnesses cosign only checkpoints the log signed")
    return run(locate(args.db), host=args.host, port=args.port, key_file=args.key,
               body_seconds=args.body_timeout, queue=args.queue, witnesses=args.witnesses,
               checkpoint_interval=args.checkpoint_interval)


def keygen(args: argparse.Namespace) -> int:
    from ledger.trust.checkpoint import generate_key_pair

    if args.cosigner:
        return keygen_cosigner(args)
    if args.name:
        raise BadInput("--name is the name in a witness's vkey: it goes with --cosigner")
    prefix = _writable(args.prefix, "PREFIX", locate(args.db))
    for made in (prefix.with_suffix(".key"), prefix.with_suffix(".pub")):
        _writable(str(made), "PREFIX", locate(args.db))
    if prefix.with_suffix(".key").exists():
        raise BadInput(f"{prefix.with_suffix('.key')} exists; not overwriting a key")
    secret, public = generate_key_pair(prefix)
    print(f"wrote {secret} (keep it secret) and {public} (publish it)")
    print(public_key_line(secret))
    return 0


def keygen_cosigner(args: argparse.Namespace) -> int:
    """A witness's key: NAME.key and NAME.vkey; the vkey is all that is printed on stdout."""
    from ledger.trust.witness_key import generate_cosigner_key, vkey_path

    location = locate(args.db)
    secret = _writable(f"{args.prefix}.key", "NAME", location)
    _writable(str(vkey_path(secret)), "NAME", location)
    cosigner = generate_cosigner_key(secret, args.name or secret.with_suffix("").name)
    print(f"wrote {secret} (keep it secret) and {vkey_path(secret)} (publish it)", file=sys.stderr)
    print(cosigner.vkey())
    return 0


def witness_serve(args: argparse.Namespace) -> int:
    from ledger.http.witness import serve as run
    from ledger.trust.checkpoint import load_log_verifier
    from ledger.trust.witness import Witness, WitnessState
    from ledger.trust.witness_key import load_cosigner

    key = Path(args.key)
    cosigner = load_cosigner(key)
    logs: dict[str, Any] = {}
    for given in args.log:
        origin, equals, file = given.rpartition("=")
        if not equals or not origin or not file:
            raise BadInput(f"--log {given!r}: expected ORIGIN=FILE (the log's origin line and its "
                           "public key, PEM or vkey)")
        if any(ord(c) < 0x20 for c in origin):
            raise BadInput(f"--log {given!r}: an origin is one line of text")
        if origin in logs:
            raise BadInput(f"--log: origin {origin!r} is given twice")
        logs[origin] = load_log_verifier(_readable(file))
    state = Path(args.state) if args.state else key.with_suffix(".state")
    _writable(str(state), "--state")
    witness = Witness(cosigner, logs, WitnessState(state))
    return run(witness, host=args.host, port=args.port)


def public_key_line(secret: Path) -> str:
    """The public key as ReporterRegistered carries it; alone on keygen's last line."""
    from ledger.trust.checkpoint import load_private_key
    from ledger.trust.signatures import raw_public_key_b64

    return raw_public_key_b64(load_private_key(secret).public_key())


def sign(args: argparse.Namespace) -> int:
    from ledger.trust.signing import sign_lines

    with _input(args.file) as stream:
        return sign_lines(stream, Path(args.key), getattr(args, "as_reporter", None))


def demo(args: argparse.Namespace, main: Callable[[list[str]], int]) -> int:
    from ledger.demo import run

    if args.db:
        # Silently building somewhere else than asked would be worse than refusing.
        raise BadInput("demo builds its own fresh ledger in --dir (default ./ledger-demo); "
                       "it does not take --db")
    return run(Path(args.dir or "ledger-demo"), main, stations=args.stations)


# -- rendering -------------------------------------------------------------------------------


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

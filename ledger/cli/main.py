"""The ``ledger`` command line (every command is in README.md and docs/).

Exit codes: 0 success, 2 bad input or usage, 1 anything else. Every error is one line on
stderr; a traceback is shown only with LEDGER_DEBUG=1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from ledger.cli import commands
from ledger.cli.render import FORMATS
from ledger.errors import BadInput, Failure, explain_failure, one_line


class UsageError(ValueError):
    """Bad arguments: exit 2."""


class Parser(argparse.ArgumentParser):
    commands: dict[str, Parser]  # the top level's: each command's parser, by name

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line says it better.
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _query_options(parser: argparse.ArgumentParser, *, stage: bool = False) -> None:
    _moment_options(parser)
    parser.add_argument("--format", choices=FORMATS, default="table", help=FORMAT_HELP)
    if stage:
        parser.add_argument("--stage", choices=("preliminary", "final"), default="preliminary",
                            help=STAGE_HELP)
        parser.add_argument("--reporter", metavar="ID", help="a parallel tally from this "
                            "reporter's protocols (default: the election's authority)")
        parser.add_argument("--scope", metavar="REGION", help="only stations of this region "
                            "or district")


FORMAT_HELP = "output as a table (default), json or csv"
STAGE_HELP = ("preliminary: the latest protocols as they come in (default); final: as "
              "announced, after recounts and annulments")
STATION_HELP = "only this station (exit 2 if the election has no such station)"
CHECKPOINT_HELP = "a checkpoint file written by `ledger checkpoint`"


class _Elsewhere:
    """Stands for the parser of a command not asked for: its options are not built."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass

    def set_defaults(self, **kwargs: object) -> None:
        pass


def build_parser(only: str | None = None) -> Parser:
    """The whole command line; with ``only``, the parser of that one command alone (argparse
    builds each option's help formatter eagerly: every command's costs more than a small
    command's own work). An unknown ``only`` gets the whole parser, to list the commands."""
    parser = _build_parser(only)
    if only is not None and not parser.commands.get(only):
        return _build_parser(None)
    return parser


def _build_parser(only: str | None) -> Parser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="PATH_OR_URL",
                        help="SQLite file or postgresql:// URL (default: $LEDGER_DB or ./ledger.db)")
    parser = Parser(
        prog="ledger",
        description="A tamper-evident ledger of election protocols, announcements and appeals.",
        epilog="The ledger is the SQLite file or PostgreSQL database named by --db, else by "
               "$LEDGER_DB, else ./ledger.db. Every command takes --db (before or after its "
               "name); `ledger COMMAND --help` shows its options. Example: ledger append "
               "night.jsonl && ledger tally --as-of 2030-04-07T23:00:00+02:00",
    )
    # Accepted before the command too (`ledger --db X tally`). A separate dest, because a
    # subcommand's namespace overwrites the top level's.
    parser.add_argument("--db", dest="global_db", metavar="PATH_OR_URL",
                        help="SQLite file or postgresql:// URL of the ledger "
                        "(default: $LEDGER_DB, else ./ledger.db)")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = {}

    def command(name: str, help: str, example: str, run: Callable[..., int]) -> Any:
        if only is not None and name != only:
            return _Elsewhere()
        p = sub.add_parser(name, parents=[common], help=help, description=help,
                           epilog=f"Example: {example}")
        p.set_defaults(run=run)
        parser.commands[name] = p
        return p

    p = command("append", "validate and append JSON Lines events (atomic; re-appending is a "
                "no-op)", "ledger append night.jsonl   or   producer | ledger append -",
                commands.append)
    p.add_argument("file", metavar="FILE", help="a JSON Lines file, or - for standard input")
    p.add_argument("--skip-invalid", action="store_true",
                   help="store the valid lines and write the bad ones to --rejects")
    p.add_argument("--rejects", metavar="FILE", help="where --skip-invalid writes bad lines")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="the summary as a line of text (default) or json")

    command("replay", "rebuild every read model from the log, from scratch",
            "ledger replay", commands.replay)
    p = command("elections", "list the elections in the ledger", "ledger elections",
                commands.list_elections)
    _query_options(p)
    p = command("history", "the events in log order, with positions and recorded_at",
                "ledger history --station n1 --format json", commands.history)
    p.add_argument("--station", metavar="ID", help=STATION_HELP)
    _query_options(p)
    p = command("tally", "the preliminary or final tally, or a reporter's parallel tally",
                "ledger tally --stage final --as-of 2030-04-09T00:00:00+02:00", commands.tally)
    _query_options(p, stage=True)
    p = command("seats", "the seat allocation of the tally", "ledger seats --stage final",
                commands.seats)
    _query_options(p, stage=True)
    p = command("forensics", "election forensics of the protocols the tally counts: integer "
                "percentages, the turnout x share fingerprint, last digits",
                "ledger forensics --choice ur --format json", commands.forensics)
    p.add_argument("--choice", metavar="ID", help="the choice whose share is looked at "
                   "(default: the one with the most votes in the tally)")
    _query_options(p, stage=True)
    p = command("estimate", "the final result estimated from the protocols counted so far, "
                "with intervals", "ledger estimate --as-of 2030-04-07T22:00:00+02:00",
                commands.estimate)
    p.add_argument("--confidence", type=_fraction, default=0.95, metavar="P",
                   help="the intervals' confidence, between 0 and 1 (default 0.95)")
    _query_options(p, stage=True)
    p = command("audit", "per-station timeline, conflicts, control-check failures, "
                "discrepancies", "ledger audit --station s1", commands.audit)
    p.add_argument("--station", metavar="ID", help=STATION_HELP)
    _query_options(p)
    p = command("withheld", "withheld protocols, and the requesting party's share where "
                "copies were withheld versus given", "ledger withheld --format json",
                commands.withheld)
    _query_options(p)
    p = command("appeals", "appeals and their outcomes", "ledger appeals", commands.appeals)
    _query_options(p)
    p = command("reporters", "who has reported what (protocols, withheld requests, appeals), "
                "and the span of the election's events and protocols",
                "ledger reporters --as-of 2030-04-07T23:00:00+02:00", commands.reporters)
    _query_options(p)
    p = command("checkpoint", "print a checkpoint (tree size and root hash) to publish or keep; "
                "it is also recorded in the ledger", "ledger checkpoint --key cec.key > night.ckpt",
                commands.checkpoint)
    p.add_argument("--key", metavar="FILE", help="sign it with this Ed25519 private key")
    p.add_argument("--name", metavar="NAME", help="the signer's name in the note "
                   "(default: the log's origin)")
    p = command("verify", "recompute every hash from the stored events; exit 0 only if the log "
                "is intact and extends the checkpoint",
                "ledger verify --checkpoint night.ckpt --public-key cec.pub", commands.verify)
    _anchor_options(p, "the log must extend it")
    p = command("prove", "print an inclusion proof (JSON) that one event is in the log",
                "ledger prove n1-b --checkpoint night.ckpt > n1.proof", commands.prove)
    p.add_argument("event_id", metavar="EVENT_ID", help="the event's event_id (as `ledger "
                   "history` lists it)")
    p.add_argument("--checkpoint", metavar="FILE", help="prove against this checkpoint's tree")
    p = command("check-proof", "verify an inclusion proof offline, without the ledger",
                "ledger check-proof n1.proof --checkpoint night.ckpt --public-key cec.pub",
                commands.check_proof)
    p.add_argument("proof", metavar="PROOF", help="a proof file written by `ledger prove`")
    _anchor_options(p, "the proof must lead to its root (default: the root inside the proof)")
    p = command("serve", "serve the ledger over HTTP: the JSON API, a live feed and a live page",
                "ledger serve --port 8080 --key ledger.key", commands.serve)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on "
                   "(default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="the port to listen on (default: 8080)")
    p.add_argument("--key", metavar="FILE.key", help="sign checkpoints and write receipts with "
                   "this Ed25519 private key")
    p.add_argument("--body-timeout", type=float, default=None, metavar="SECONDS",
                   help="time a client has to send a request body (default 10)")
    p.add_argument("--queue", type=_positive, default=None, metavar="N",
                   help="submissions that may wait to be written; beyond that a POST is "
                   "answered 503 with Retry-After (default 1024)")
    p.add_argument("--witnesses", metavar="POLICY", help="submit each signed checkpoint to the "
                   "witnesses of this C2SP tlog-policy file and publish at /v1/checkpoint the "
                   "latest one their quorum cosigned (needs --key)")
    p.add_argument("--checkpoint-interval", type=_seconds, default=1.0, metavar="SECONDS",
                   help="sign and submit a checkpoint at most this often (default 1)")
    p = command("check-receipt", "check a receipt from `ledger serve` against the log and, "
                "optionally, a checkpoint",
                "ledger check-receipt r.json --public-key ledger.pub --checkpoint night.ckpt",
                commands.check_receipt)
    p.add_argument("receipt", metavar="RECEIPT", help="a receipt, as `ledger serve` returned it")
    p.add_argument("--public-key", metavar="FILE.pub", required=True,
                   help="the ledger's Ed25519 public key (the server's --key)")
    p.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP + " (with --url, "
                   "default: the checkpoint the server publishes, signed by --public-key)")
    p.add_argument("--url", metavar="URL", help="check against the ledger served at URL (its "
                   "HTTP API) instead of a local database")
    _witnesses_option(p)
    p = command("mirror", "keep a verified replica of a served ledger in the local ledger "
                "(--db: empty, or already a replica of it); read-only afterwards",
                "ledger mirror http://127.0.0.1:8080 --public-key ledger.pub --follow",
                commands.mirror)
    p.add_argument("url", metavar="URL", help="where the source is served (`ledger serve`)")
    p.add_argument("--public-key", metavar="LOG.pub", required=True,
                   help="the log's Ed25519 public key: its checkpoints must be signed by it")
    p.add_argument("--witnesses", metavar="POLICY", help="a C2SP tlog-policy file: accept only "
                   "checkpoints cosigned by its quorum of witnesses")
    p.add_argument("--follow", action="store_true", help="keep following the source's feed, "
                   "mirroring each new checkpoint (one line each, with its lag); Ctrl-C stops")
    p.add_argument("--evidence", metavar="FILE", help="where to write the evidence of a split "
                   "view (default: split-view-SIZE.json)")
    p = command("check-evidence", "check split-view evidence written by `ledger mirror`, "
                "offline: exit 0 only if it proves the log's key signed two histories",
                "ledger check-evidence split-view-120.json --public-key ledger.pub",
                commands.check_evidence)
    p.add_argument("evidence", metavar="FILE", help="the evidence (JSON)")
    p.add_argument("--public-key", metavar="LOG.pub", required=True,
                   help="the log's Ed25519 public key")
    p = command("keygen", "make an Ed25519 key pair (for checkpoints and signed events); the "
                "last line printed is the public key in base64, as ReporterRegistered carries it; "
                "with --cosigner, a witness's key and its C2SP vkey",
                "ledger keygen cec  (writes cec.key and cec.pub)   or   ledger keygen golos "
                "--cosigner  (writes golos.key and golos.vkey)", commands.keygen)
    p.add_argument("prefix", metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub "
                   "(with --cosigner: PREFIX.key and PREFIX.vkey)")
    p.add_argument("--cosigner", action="store_true", help="a witness's key: writes PREFIX.vkey, "
                   "the C2SP verifier key NAME+ID+base64(0x04 || key), and prints it")
    p.add_argument("--name", metavar="NAME", help="with --cosigner: the name in the vkey and in "
                   "every cosignature (default: PREFIX's file name), e.g. witness.example.org/w1")
    p = sub.add_parser("witness", help="run a witness that cosigns a log's checkpoints "
                       "(C2SP tlog-witness)", description="A witness cosigns checkpoints of "
                       "the logs it is given, each only if it extends the last one it cosigned.")
    witness = p.add_subparsers(dest="witness_command", metavar="COMMAND", parser_class=Parser,
                               required=True, help="serve: answer POST /add-checkpoint")
    p = witness.add_parser("serve", help="answer POST /add-checkpoint", description="Answer C2SP "
                           "tlog-witness POST /add-checkpoint for the logs named by --log.",
                           epilog="Example: ledger witness serve --key golos.key --log "
                           "election-ledger/0123456789abcdef=cec.pub --port 8081")
    p.set_defaults(run=commands.witness_serve)
    p.add_argument("--key", metavar="W.key", required=True, help="the witness's private key, "
                   "from `ledger keygen W --cosigner`; its name and key id come from W.vkey beside it")
    p.add_argument("--log", metavar="ORIGIN=LOG.pub", action="append", required=True,
                   help="a log to witness: its origin (the first line of its checkpoints) and its "
                   "public key (PEM, or a vkey); repeat for more logs")
    p.add_argument("--state", metavar="FILE", help="the SQLite file of what it last cosigned per "
                   "log (default: W.state beside W.key)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on "
                   "(default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8081, help="the port to listen on (default: 8081)")
    p = command("sign", "sign each JSON line as its acting reporter and print the signed lines",
                "ledger sign --key cec.key night.jsonl > night.signed.jsonl", commands.sign)
    p.add_argument("file", metavar="FILE", help="a JSON Lines file, or - for standard input")
    p.add_argument("--key", metavar="FILE.key", required=True, help="the reporter's Ed25519 "
                   "private key (from ledger keygen)")
    p.add_argument("--as", dest="as_reporter", metavar="REPORTER", help="the signer: required "
                   "for AppealDecided lines (signed by the election's authority); for other "
                   "lines it must match the reporter the line names")
    p = command("export", "export the results as a NIST SP 1500-100 v2 ElectionReport (JSON)",
                "ledger export --format nist-err --stage final > report.json", commands.export)
    _moment_options(p)
    p.add_argument("--stage", choices=("preliminary", "final"), default="preliminary",
                   help=STAGE_HELP)
    p.add_argument("--format", choices=("nist-err",), required=True,
                   help="nist-err: NIST SP 1500-100 v2 ElectionReport JSON (the only one)")
    p = command("import", "import a dataset in another format (atomic, like append): an "
                "OpenElections precinct CSV, or any station-level CSV table through a TOML map",
                "ledger import openelections 20201103__mt__general__precinct.csv   or   "
                "ledger import csv duma2016.csv --map docs/maps/ru-duma-2016.toml",
                commands.import_dataset)
    p.add_argument("dataset_format", metavar="FORMAT", choices=("openelections", "csv"),
                   help="openelections: an OpenElections precinct-level results CSV "
                   "(docs/openelections.md); csv: one row per station, columns named by --map "
                   "(docs/real-data.md)")
    p.add_argument("file", metavar="FILE", help="the file to import")
    p.add_argument("--map", metavar="MAP.toml", help="for csv: which column holds which "
                   "protocol figure (docs/real-data.md)")
    p.add_argument("--occurred-at", metavar="TIME", help="when the results were issued "
                   "(default: from the file name's date)")
    p.add_argument("--authority", default="openelections", metavar="ID",
                   help="the authority recorded as defining the elections and issuing the "
                   "results (default: openelections)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="for csv: store the valid rows and write the refused ones to --rejects")
    p.add_argument("--rejects", metavar="FILE.csv", help="for csv: where --skip-invalid writes "
                   "each refused row, with its line number and reason")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="the summary as a line of text (default) or json")
    p = command("report", "write a self-contained HTML report with charts",
                "ledger report --out night.html --as-of 2030-04-08T06:00:00+02:00",
                commands.report)
    p.add_argument("--out", metavar="FILE.html", required=True,
                   help="where to write the report (never the ledger's own files)")
    _moment_options(p)
    p = command("demo", "build the Kazakhstan 2007 scenario in a fresh ledger and show it",
                "ledger demo --dir /tmp/kz2007", lambda args: commands.demo(args, main))
    p.add_argument("--dir", metavar="DIR", help="where to build it (default: ./ledger-demo)")
    p.add_argument("--stations", type=_positive, default=None, metavar="N",
                   help="number of polling stations (default: about ten thousand)")
    return parser


def _anchor_options(parser: argparse.ArgumentParser, must: str) -> None:
    """A published checkpoint to check against: its file, the log's key, the witnesses' policy."""
    parser.add_argument("--checkpoint", metavar="FILE", help=f"{CHECKPOINT_HELP}; {must}")
    parser.add_argument("--public-key", metavar="FILE", help="require the checkpoint's signature "
                        "by this Ed25519 public key")
    _witnesses_option(parser)


def _witnesses_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--witnesses", metavar="POLICY", help="count the checkpoint only with "
                        "the log's signature (--public-key) and valid cosignatures that satisfy "
                        "this C2SP tlog-policy file's quorum")


def _moment_options(parser: argparse.ArgumentParser) -> None:
    """--election, --as-of and --known-at, as every query takes them."""
    parser.add_argument("--election", metavar="ID", help="election id (needed only when the "
                        "ledger holds more than one)")
    parser.add_argument("--as-of", metavar="TIME", help="valid time: only events that occurred "
                        "by TIME (RFC 3339 with offset, or now); default: no bound")
    parser.add_argument("--known-at", metavar="TIME", help="ledger time: only events the ledger "
                        "had recorded by TIME (RFC 3339 with offset, or now); default: no bound")


class _Version(argparse.Action):
    """argparse's ``version`` action, but the version is looked up only when asked for:
    importlib.metadata costs about a fifth of a query's whole run."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("election-ledger")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_STATIONS:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_STATIONS:,}, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, such as 0.95; "
                                         f"got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 3600 seconds, got {text}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65_535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


MAX_STATIONS = 2_000_000  # about twice India; more would only exhaust the disk


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    for number, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            # Linux hands over bytes; undecodable ones would reach SQLite as lone surrogates.
            return fail(f"argument {number} is not valid UTF-8: {argument!r}", 2)
    parser = build_parser(only=command_asked(arguments))
    args = parser.parse_args(arguments)
    args.db = getattr(args, "db", None) or args.global_db
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (BadInput, UsageError) as error:
        return fail(str(error), 2)
    except Failure as error:
        return fail(str(error), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing more to say.
        sys.stderr.close()
        return 0
    except Exception as error:  # the last line of defence: one line, never a traceback
        if os.environ.get("LEDGER_DEBUG"):
            raise
        return fail(explain_failure(error), 1)


def command_asked(arguments: Sequence[str]) -> str | None:
    """The command named in ``arguments`` (the first word that is neither an option nor the
    value of the top level's ``--db``); None if there is none, or if help is asked before it."""
    value_of_db = False
    for argument in arguments:
        if value_of_db:
            value_of_db = False
        elif argument == "--db":
            value_of_db = True
        elif argument in ("-h", "--help"):
            return None
        elif not argument.startswith("-"):
            return argument
    return None


def fail(message: str, code: int, stream: IO[str] | None = None) -> int:
    print(f"ledger: {one_line(message)}", file=stream or sys.stderr)
    return code


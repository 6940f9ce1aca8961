"""The ``batch-audiences`` command: argument parsing, dispatch, Ctrl-C and exit codes.

Each subcommand is an ``async`` function of :mod:`._commands` run under :func:`asyncio.run`, so
that an interrupt is handled on the event loop: the first Ctrl-C asks the running command to stop
gracefully (an upload stops reading its input and lets in-flight requests finish), the second
exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TextIO

from .._errors import (
    AuthenticationError,
    BatchAudiencesError,
    ConfigurationError,
    TransportError,
    ValidationError,
)
from .._version import __version__
from ._argtypes import non_negative_int, positive_float, positive_int
from ._checkpoint import CheckpointError
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP, EXIT_USAGE, CLIError
from ._output import Console

__all__ = ["build_parser", "main"]

PROG = "batch-audiences"

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    done, but something failed: the request, some items or chunks, or bad input rows
       (also --dry-run when it finds bad rows, and --max-bad-rows); nothing listening at the
       base URL; the report says what, and one "error:" line on stderr sums it up
  {EXIT_USAGE}    usage or input error: bad arguments, an unreadable file or manifest, a checkpoint
       that does not match the job
  {EXIT_SETUP}    authentication or configuration error: missing or rejected key, bad base URL
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); with --checkpoint, re-run the same command to resume"""

ENVIRONMENT = """\
environment:
  BATCH_REST_API_KEY   REST API key (default of --api-key)
  BATCH_PROJECT_KEY    project key (default of --project-key)
  BATCH_API_BASE_URL   API base URL (default of --base-url; https://api.batch.com if unset)"""

DESCRIPTION = """\
Manage Batch audiences (named lists of customer IDs) from the command line: create, inspect and
remove audiences, upload millions of IDs from CSV, NDJSON or text files with progress, a final
report and safe resume, create audiences in bulk from a manifest, and try it all on a local
emulator of the API."""

EXAMPLES = """\
examples:
  batch-audiences emulator --port 8080 &           # a local API to try things on
  export BATCH_API_BASE_URL=http://127.0.0.1:8080
  export BATCH_REST_API_KEY=emulator-rest-api-key BATCH_PROJECT_KEY=project_emulator
  batch-audiences create vip --display-name "VIP customers"
  batch-audiences upload vip customers.csv --id-column customer_id --attr plan --attr signup:date \\
      --checkpoint vip.ckpt --wait
  batch-audiences list --all --json
  batch-audiences demo"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


class UsageError(Exception):
    """A bad command line, raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors become one line on stderr, not a usage block.

    argparse prints the usage text and exits; here :class:`UsageError` carries the message up to
    :func:`main`, which prints it through the console (so tests' streams and redaction apply).
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _output_options(suppress: bool) -> _Parser:
    """--json, -q, -v; on subcommands their default is SUPPRESS so a global flag is not reset."""
    parent = _Parser(add_help=False, argument_default=argparse.SUPPRESS if suppress else None)
    group = parent.add_argument_group("output options")
    group.add_argument("--json", action="store_true", dest="json",
                       default=argparse.SUPPRESS if suppress else False,
                       help="print the result as one JSON document on stdout")
    group.add_argument("-q", "--quiet", action="store_true", dest="quiet",
                       default=argparse.SUPPRESS if suppress else False,
                       help="no progress and no notes on stderr (errors and results still print)")
    group.add_argument("-v", "--verbose", action="store_true", dest="verbose",
                       default=argparse.SUPPRESS if suppress else False,
                       help="log every request and retry to stderr, and show tracebacks")
    return parent


def _connection_options(suppress: bool) -> _Parser:
    parent = _Parser(add_help=False, argument_default=argparse.SUPPRESS if suppress else None)
    group = parent.add_argument_group("connection options")
    group.add_argument("--api-key", dest="api_key_option", metavar="KEY",
                       help="REST API key (default: $BATCH_REST_API_KEY); prefer the variable, "
                       "a command line can be seen by other users of the machine")
    group.add_argument("--project-key", dest="project_key_option", metavar="KEY",
                       help="project key (default: $BATCH_PROJECT_KEY)")
    group.add_argument("--base-url", dest="base_url_option", metavar="URL",
                       help="API base URL (default: $BATCH_API_BASE_URL, else https://api.batch.com)")
    group.add_argument("--api-version", dest="api_version_option", metavar="V",
                       help="API version (default: 2.8)")
    group.add_argument("--http-timeout", dest="http_timeout", type=positive_float, metavar="S",
                       help="seconds before one HTTP request times out (default: 30)")
    group.add_argument("--max-retries", dest="max_retries", type=non_negative_int, metavar="N",
                       help="retries of a throttled or unavailable request (default: 5)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    out_main, out_sub = _output_options(False), _output_options(True)
    conn_main, conn_sub = _connection_options(False), _connection_options(True)
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=f"{EXIT_CODES}\n\n{ENVIRONMENT}\n\n{EXAMPLES}",
        formatter_class=_Formatter,
        parents=[conn_main, out_main],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                     parser_class=_Parser)
    api = [conn_sub, out_sub]

    def command(name: str, summary: str, description: str, parents: list[_Parser],
                epilog: str = "") -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=textwrap.fill(description, 96), parents=parents,
            formatter_class=_Formatter, epilog=(epilog + "\n\n" if epilog else "") + EXIT_CODES,
        )

    p = command("create", "create an empty audience",
                "Create an empty audience of custom IDs. Fails (exit 1) if the name is taken.", api)
    p.add_argument("name", metavar="NAME", help="audience name: 1-255 characters of A-Z a-z 0-9 _ -")
    p.add_argument("--display-name", metavar="TEXT", help="human-readable description")

    p = command("remove", "delete an audience", "Delete an audience and its content.", api)
    p.add_argument("name", metavar="NAME", help="audience name")

    p = command("view", "show one audience",
                "Show an audience: its size, indexing state and dates. With --token, the indexing "
                "state is that of the write which returned the token.", api)
    p.add_argument("name", metavar="NAME", help="audience name")
    p.add_argument("--token", metavar="T", help="indexing token of a write")

    p = command("list", "list audiences",
                "List the project's audiences, the first 10 by default.", api)
    p.add_argument("--limit", type=positive_int, default=10, metavar="N",
                   help="show at most N audiences (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="show every audience (fetched 100 per request)")

    p = command("wait", "wait until a write is indexed",
                "Poll an audience until its last write (or the write of --token) is no longer "
                "IN_PROGRESS, then show it. Exit 1 if --timeout passes first.", api)
    p.add_argument("name", metavar="NAME", help="audience name")
    p.add_argument("--token", metavar="T", help="indexing token of the write to wait for")
    p.add_argument("--timeout", type=positive_float, default=300.0, metavar="S",
                   help="give up after S seconds (default: %(default)s)")
    p.add_argument("--poll-interval", type=positive_float, default=1.0, metavar="S",
                   help="first polling interval; it grows to 10x (default: %(default)s)")

    from ._upload import add_upload_arguments  # the biggest command has its own module

    p = command(
        "upload", "upload IDs from a file to an audience",
        "Stream IDs from a CSV, NDJSON or text file (or '-' for stdin) into an existing audience, "
        "10,000 per request, paced to what the API accepts, retried when throttled, order kept.",
        api,
        epilog=UPLOAD_EPILOG,
    )
    add_upload_arguments(p)

    from ._sync import SYNC_EPILOG, add_sync_arguments

    p = command(
        "sync", "make an audience equal to a file, sending only what changed",
        "Keep an audience equal to a CSV, NDJSON or text file (or '-' for stdin): compare it with "
        "the snapshot of the last sync and send only removes, adds and changed IDs.",
        api,
        epilog=SYNC_EPILOG,
    )
    add_sync_arguments(p)

    p = command(
        "create-many", "create audiences from a manifest",
        "Create every audience of a manifest, concurrently: a CSV file with a header holding "
        "'name' and optionally 'display_name', or NDJSON objects with those keys ('-' reads stdin).",
        api,
        epilog="example manifest (CSV):\n  name,display_name\n  vip,VIP customers\n  churn-risk,"
        "Likely to churn",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV or NDJSON file, or '-' for stdin")
    p.add_argument("--format", choices=("csv", "ndjson"), default=None,
                   help="manifest format (default: from the extension; stdin: csv)")
    p.add_argument("--if-exists", choices=("error", "skip"), default="error",
                   help="an audience that already exists is a failure (error, the default) or is "
                   "reported as skipped (skip)")
    p.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                   help="creates in flight at once (default: %(default)s)")
    p.add_argument("--max-rate", type=positive_float, default=None, metavar="R",
                   help="at most R requests per second (default: adapt to the server)")

    from ..testing import _cli as emulator_cli

    p = commands.add_parser(
        "emulator", help="serve a local emulator of the API",
        description=textwrap.fill(
            "Serve an in-memory emulator of the Audience API until Ctrl-C, for trying the SDK and "
            "this command without a Batch account. Point the other commands at it with --base-url "
            "(or BATCH_API_BASE_URL) and its keys, which it prints.", 96),
        formatter_class=_Formatter,
        epilog="exit codes:\n  0  stopped with Ctrl-C\n  1  could not listen (port taken)\n"
        "  2  bad option",
    )
    emulator_cli.add_arguments(p)

    p = command(
        "emulator-dump", "show what a running emulator holds",
        "Show the audiences a running emulator holds, or with NAME every ID of one audience and its "
        "attributes (applied writes only). Reads the emulator's own inspection routes, GET "
        "/_emulator/audiences and GET /_emulator/audiences/NAME/members, which Batch's API does not "
        "have. The base URL (default: $BATCH_API_BASE_URL, else http://127.0.0.1:8080) must be a "
        "loopback address; the keys default to the environment, then to the emulator's defaults.",
        api,
    )
    p.add_argument("name", metavar="NAME", nargs="?", default=None, help="audience whose IDs to show")

    p = command(
        "demo", "run the end-to-end demo on a local emulator",
        "Start an emulator in this process (rate-limited, with injected 429 and 503 answers), "
        "then create audiences concurrently, fill, replace, wait, list, remove, and upload "
        "100,000 IDs, with progress, and print what happened. Needs no account.",
        [out_sub],
    )
    p.add_argument("--ids", type=positive_int, default=100_000, metavar="N",
                   help="IDs in the big upload (default: %(default)s)")
    p.add_argument("--audiences", type=positive_int, default=36, metavar="N",
                   help="audiences created concurrently (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="seed of the injected faults (default: %(default)s)")
    return parser


UPLOAD_EPILOG = """\
input formats (guessed from the extension, else --format):
  .csv            a header row; the ID column is --id-column (default: the first column)
  .ndjson .jsonl  one JSON value per line: a string (an ID), or an object with the ID under the
                  --id-column key (default "id"), its attributes under "attributes" (or the
                  --attr keys) and, for --mode update, "add" or "remove" under "action"
  .txt (other)    one ID per line
  .parquet        columns typed by the file's schema; --id-column (default: the first column)
  .gz .bz2 .xz .zst  compressed, after the format's extension: customers.csv.gz
  --sql QUERY / --sql-file PATH with --db URL (or $BATCH_AUDIENCES_DB_URL): a query instead of
                  FILE; columns typed by the database; the URL's password is never printed
  --attr COL[:TYPE] sends column COL as an attribute; TYPE is str (default), int, float, bool,
  date (sent as date(COL), RFC 3339) or url (sent as url(COL)). Up to 15 attributes.

modes:
  add      add the IDs (default)        remove   remove the IDs
  update   each row is an add or a remove (--action-column, default "action")
  replace  the audience ends up holding exactly the file's IDs

resume:
  --checkpoint PATH records each accepted chunk (atomically, after every acknowledgement).
  After a crash, a kill or Ctrl-C, run the same command again: only the chunks not accepted
  are sent. A checkpoint written for another file, audience, mode or option is refused (exit
  2). Standard input cannot be checkpointed. Once every chunk was accepted, running the same
  command again prints "already done" at once (exit 0), without reading the file.

bad rows:
  The report lists the first 20 (--json the first 10,000). --rejects PATH writes every one, with
  its line number and reason, in the input's format: CSV with two leading columns _line,_error;
  NDJSON objects {"line", "error", "row"}; text as LINE<TAB>REASON<TAB>the line.
  --max-bad-rows N stops reading at the next chunk boundary once N are seen (exit 1; the
  checkpoint is kept, so a re-run with a higher limit resumes).

interrupting:
  The first Ctrl-C stops reading at the next chunk boundary, lets the requests in flight finish
  (cancelling them after 30 s), writes the checkpoint and the partial report, and exits 130. A
  second Ctrl-C exits at once; the checkpoint, written after every acknowledgement, stays valid.

dry run:
  --dry-run reads and checks the whole file, sends nothing, and lists the bad rows with their
  line numbers: exit 0 if every row is good, 1 if some are bad."""


# -- running -----------------------------------------------------------------------------------


class Interrupter:
    """Ctrl-C handling on the event loop: first a graceful stop, then an immediate exit."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.count = 0
        self.graceful: Callable[[], None] | None = None
        self._task: asyncio.Task[int] | None = None

    @property
    def requested(self) -> bool:
        """Whether Ctrl-C was pressed."""
        return self.count > 0

    def attach(self, task: asyncio.Task[int]) -> None:
        self._task = task

    def __call__(self) -> None:
        self.count += 1
        if self.count > 1:
            self.console.raw_err("\ninterrupted again: exiting now\n")
            os._exit(EXIT_INTERRUPTED)
        if self.graceful is not None:
            self.console.raw_err(
                "\ninterrupted: finishing the requests in flight (Ctrl-C again to quit at once)\n"
            )
            self.graceful()
        elif self._task is not None:
            self._task.cancel()


CommandFunc = Callable[[argparse.Namespace, Console, Interrupter], Awaitable[int]]


async def _run_command(func: CommandFunc, args: argparse.Namespace, console: Console) -> int:
    interrupter = Interrupter(console)
    loop = asyncio.get_running_loop()
    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, interrupter)
        installed = True
    task = asyncio.ensure_future(func(args, console, interrupter))
    interrupter.attach(task)
    try:
        return await task
    except asyncio.CancelledError:
        if interrupter.requested:
            return EXIT_INTERRUPTED
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


class _RedactingFormatter(logging.Formatter):
    def __init__(self, console: Console) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._console = console

    def format(self, record: logging.LogRecord) -> str:
        return self._console.redact(super().format(record))


def _exit_code(error: BaseException) -> int:
    if isinstance(error, (ConfigurationError, AuthenticationError)):
        return EXIT_SETUP
    if isinstance(error, (ValidationError, CheckpointError)):
        return EXIT_USAGE
    if isinstance(error, CLIError):
        return error.exit_code
    if isinstance(error, OSError) and not isinstance(error, BatchAudiencesError):
        return EXIT_USAGE  # a file that cannot be read or written (IndexingTimeoutError is an OSError)
    return EXIT_FAILED


def _describe(error: BaseException, base_url: str) -> str:
    if isinstance(error, AuthenticationError):
        return f"{error} (check the REST API key and the project key)"
    if isinstance(error, ConfigurationError):
        # The SDK's message names the Python arguments; here they are options.
        return str(error).replace("pass api_key=", "pass --api-key").replace(
            "pass project_key=", "pass --project-key")
    from ._commands import refused  # imported with the commands, not for --help

    if isinstance(error, TransportError) and refused(error):
        # The server went away during the command (the start-up check found it listening).
        return f"{error} (nothing is listening at {base_url}: connection refused)"
    if isinstance(error, OSError) and getattr(error, "filename", None) is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the ``batch-audiences`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status (see ``batch-audiences --help``) instead of exiting, so it can be
    called from Python and tests.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"no command given (see '{PROG} --help' for the list)")
    except SystemExit as exit_:  # argparse exits on --help and --version (0)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as error:
        Console(err=stderr).error(str(error))
        return EXIT_USAGE
    if args.command == "emulator":
        from ..testing import _cli as emulator_cli

        return emulator_cli.run(args)

    console = Console(
        out=stdout, err=stderr, json_mode=getattr(args, "json", False),
        quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False),
    )
    console.add_secret(getattr(args, "api_key_option", None))
    console.add_secret(os.environ.get("BATCH_REST_API_KEY", "").strip() or None)
    handler: logging.Handler | None = None
    logger = logging.getLogger("batch_audiences")
    previous_level = logger.level
    if console.verbose:
        handler = logging.StreamHandler(console.err)
        handler.setFormatter(_RedactingFormatter(console))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    from ._commands import COMMANDS, resolved_base_url

    try:
        return asyncio.run(_run_command(COMMANDS[args.command], args, console))
    except KeyboardInterrupt:
        console.raw_err("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        if console.verbose and not isinstance(error, CLIError):  # a CLIError says all there is
            console.raw_err("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        console.error(_describe(error, resolved_base_url(args)))
        return _exit_code(error)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)


def console_main() -> None:
    """Entry point of the ``batch-audiences`` console script."""
    sys.exit(main())


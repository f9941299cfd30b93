"""The one wrapper every ``experiments/*.py`` entry point runs its ``main`` in.

``run_cli(main)``: a :class:`hybridjax.errors.UserError` (bad setting, data file or checkpoint) or a missing
file is printed as ``error: <message>`` on stderr and exits with status 2; Ctrl-C exits with 130 without a
traceback; anything else is a bug and keeps its traceback. ``--debug`` (removed from the arguments before
they are parsed) or ``HYBRIDJAX_DEBUG=1`` shows the traceback of user errors too. tyro's own parse errors
(unknown flags, wrong types, ``ValueError`` from a config's ``__post_init__``) already print a box and exit 2.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from hybridjax.errors import Interrupted, UserError

USAGE_ERROR = 2  # exit status of a user error (the same as a command-line parse error)


def run_cli(main: Callable[[], object]) -> NoReturn:
    """Runs ``main()`` (which parses ``sys.argv``) and exits with its return value if that is an int, else 0."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("HYBRIDJAX_DEBUG", "") not in ("", "0")
    sys.argv[1:] = [arg for arg in sys.argv[1:] if arg != "--debug"]
    try:
        status = main()
    except (UserError, FileNotFoundError) as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        if not isinstance(error, UserError):
            print("(run with --debug for the traceback)", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except Interrupted as stop:  # a checkpointed stop on a signal: its message says how to resume
        print(str(stop), file=sys.stderr)
        sys.exit(stop.exit_status)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)

"""``emulator-dump``: what a running emulator holds, read from its ``/_emulator/`` routes.

The emulator started by ``batch-audiences emulator`` lives in another process, so its state is
read over HTTP, from inspection routes that only the emulator has (Batch's API has no way to list
an audience's members). The keys default to the environment, then to the emulator's own defaults;
the base URL must be a loopback address, so a real key is never sent anywhere but a local emulator.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from typing import TYPE_CHECKING

from yarl import URL

from ..testing._inspect import EmulatorStateError, fetch_state
from ._errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError
from ._output import Console, format_count, table

if TYPE_CHECKING:
    from ._main import Interrupter

__all__ = ["cmd_emulator_dump"]

# The emulator's defaults (batch-audiences emulator --help).
_EMULATOR_URL = "http://127.0.0.1:8080"
_EMULATOR_API_KEY = "emulator-rest-api-key"
_EMULATOR_PROJECT_KEY = "project_emulator"


def _loopback(url: str) -> bool:
    host = URL(url).host or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _setting(args: argparse.Namespace, option: str, variable: str, default: str) -> str:
    return getattr(args, option, None) or os.environ.get(variable, "").strip() or default


async def cmd_emulator_dump(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    base_url = _setting(args, "base_url_option", "BATCH_API_BASE_URL", _EMULATOR_URL)
    if not _loopback(base_url):
        raise CLIError(f"emulator-dump reads a local emulator: the base URL must be a loopback address, "
                       f"got {base_url}", EXIT_USAGE)
    try:
        state = await fetch_state(
            base_url,
            api_key=_setting(args, "api_key_option", "BATCH_REST_API_KEY", _EMULATOR_API_KEY),
            project_key=_setting(args, "project_key_option", "BATCH_PROJECT_KEY", _EMULATOR_PROJECT_KEY),
            audience=args.name,
            timeout=getattr(args, "http_timeout", None) or 30.0,
        )
    except EmulatorStateError as error:
        raise CLIError(str(error), EXIT_FAILED) from None
    if args.name is None:
        audiences = state.get("audiences", [])
        listed = [(a["name"], format_count(a["nb_ids"]), a["indexing_state"], a["pending_writes"])
                  for a in audiences]
        text = (table(("NAME", "IDS", "STATE", "PENDING WRITES"), listed, numeric=(1, 3))
                if listed else "no audiences")
    else:
        members = state.get("members", {})
        rows = [(custom_id, json.dumps(attributes, ensure_ascii=False) if attributes else "")
                for custom_id, attributes in sorted(members.items())]
        text = table(("ID", "ATTRIBUTES"), rows) if rows else f"{args.name!r} holds no IDs"
        if state.get("pending_writes"):
            text += f"\n({state['pending_writes']} write(s) not applied yet)"
    console.result(state, text)
    return EXIT_OK

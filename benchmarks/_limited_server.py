"""The emulator with a rate limit, in its own process, steered through stdin (pacing benchmark).

A process of its own, so that the server's timing (when a request arrives, against the token
bucket) is not disturbed by the client's process: a server thread in the client's process would
see arrivals late by up to the interpreter's thread switch interval (5 ms), which a limit of 40
requests a second with no burst (25 ms apart) cannot ignore.

    python -m benchmarks._limited_server      # prints "PORT <n>" once listening

Commands, one a line, each answered with one line:

- ``start RATE BURST RETRY_AFTER HEADERS [INDEXING]``: forget everything; one audience,
  ``bench-pacing``; a fresh rate limit (``RETRY_AFTER`` is ``exact``, ``seconds`` or ``off``;
  ``HEADERS`` 0 or 1); writes applied ``INDEXING`` seconds after they arrive (default 0)
- ``rate RATE``: change the rate while serving (what was saved up stays)
- ``counts``: ``ACCEPTED REFUSED`` since the last ``start``

It stops when stdin closes.
"""

from __future__ import annotations

import sys

from batch_audiences.testing import Emulator

from ._runner import API_KEY, PROJECT_KEY

AUDIENCE = "bench-pacing"


def main() -> int:
    with Emulator(api_key=API_KEY, project_key=PROJECT_KEY, indexing_delay=0, record_bodies=False) as emu:
        print(f"PORT {emu.port}", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command, arguments = words[0], words[1:]
            if command == "start":
                rate, burst, retry_after, headers, *indexing = arguments
                emu.reset()
                emu.indexing_delay = emu.replace_indexing_delay = float(indexing[0]) if indexing else 0.0
                emu.add_audience(AUDIENCE)
                emu.burst = float(burst)
                emu.rate_limit_retry_after = retry_after  # type: ignore[assignment]
                emu.rate_limit_headers = headers == "1"
                emu.rate_limit = float(rate)  # a full bucket, counters at zero
                answer = "ok"
            elif command == "rate":
                emu.set_rate(float(arguments[0]))
                answer = "ok"
            elif command == "counts":
                answer = " ".join(map(str, emu.rate_limit_counts()))
            else:
                answer = f"error: unknown command {command!r}"
            print(answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

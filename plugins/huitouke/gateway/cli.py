"""``huitouke gateway``: the gateway simulator in the foreground, its port and faults from the
command line (never from a production Connection).

    huitouke gateway --port 8765 --latency-ms 5 --rate-5xx 0.2 --rate-429 0.1 --seed 1

Register it on the main parser's sub-parsers with :func:`add_parser`; :func:`main` runs it alone
(``python -m huitouke.gateway.cli``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from huitouke.cli_errors import run_reporting
from huitouke.errors import UserInputError

__all__ = ["add_parser", "cmd_gateway", "main"]

DESCRIPTION = (
    "Serve the gateway simulator: the webhook (base URL http://HOST:PORT/webhook), Aliyun- and "
    "Twilio-shaped SMS APIs, with the faults asked for; it records every message it accepts "
    "(GET /_sim/accepted, /_sim/stats). For tests and the demo, never production."
)

# (flag, field of GatewayFaults, type, help)
FAULT_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--latency-ms", "latency_ms", float, "added to every call (default 0)"),
    ("--rate-5xx", "rate_5xx", float, "share of calls answered 503, nothing accepted"),
    ("--rate-429", "rate_429", float, "share of calls answered 429 with Retry-After"),
    ("--retry-after-s", "retry_after_s", float, "the Retry-After of a 429 (default 1)"),
    ("--rate-timeout", "rate_timeout", float, "share of calls that hang --hang-s before answering"),
    ("--hang-s", "hang_s", float, "how long a timed-out call hangs (default 30)"),
    ("--timeout-accepts", "timeout_accepts", float, "share of timed-out calls accepted first (0.5)"),
    ("--rate-drop", "rate_drop", float, "share of calls accepted, then dropped without a response"),
    ("--rate-invalid-number", "rate_invalid_number", float, "share of numbers rejected as invalid"),
    ("--rate-reply-t", "rate_reply_t", float, "share of recipients who reply T"),
    ("--rate-undelivered", "rate_undelivered", float, "share of receipts undelivered"),
    ("--seed", "seed", int, "seed of the fault dice (default 0)"),
)


def _rate(kind: type):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--token", default="test-token", help="the bearer token it expects (default test-token)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    for flag, dest, kind, text in FAULT_OPTIONS:
        p.add_argument(flag, dest=dest, type=_rate(kind), default=None, help=text)
    p.add_argument("--insufficient-balance", action="store_true", help="answer every send: out of balance")
    p.add_argument("--dedupe-ids", action="store_true", help="answer a repeated id with its first record")
    p.set_defaults(func=cmd_gateway)
    return p


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``gateway`` to the ``huitouke`` command's sub-parsers."""
    return _configure(
        sub.add_parser("gateway", help="serve the SMS gateway simulator", description=DESCRIPTION)
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_gateway(args: argparse.Namespace) -> int:
    from huitouke.gateway.server import serve
    from huitouke.gateway.state import GatewayFaults
    from huitouke.pii import get_logger

    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"error: refusing to bind {args.host}: the gateway simulator is for loopback "
            "(pass --allow-remote to expose it anyway)",
            file=sys.stderr,
        )
        return 2
    settings = {
        dest: getattr(args, dest) for _, dest, _, _ in FAULT_OPTIONS if getattr(args, dest) is not None
    }
    faults = GatewayFaults(
        insufficient_balance=args.insufficient_balance, dedupe_ids=args.dedupe_ids, **settings
    )
    get_logger("huitouke.gateway").setLevel(logging.INFO)  # the startup line
    try:
        serve(args.host, args.port, faults, token=args.token)
    except OSError as exc:  # the port is taken, the host is not this machine's
        raise UserInputError(
            f"cannot listen on {args.host}:{args.port}: {(exc.strerror or type(exc).__name__).lower()}"
        ) from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m huitouke.gateway.cli``: the same command and exit statuses as ``huitouke gateway``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _configure(argparse.ArgumentParser(prog="huitouke gateway", description=DESCRIPTION))
    parser.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    args = parser.parse_args(argv)
    return run_reporting(args.func, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

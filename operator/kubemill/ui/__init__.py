"""`kubemill ui`: the web UI and the webhook run endpoints, acting with each caller's own Kubernetes token.

The server knows where the API server is (a kubeconfig, or in-cluster) but holds no privileges of its own for
people: each request carries the person's bearer token. Only HttpTrigger deliveries, whose callers hold no
token, use the server's own narrow identity (`--triggers`). See docs/ui.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from kubemill.ui.kubeapi import ApiServer


def add_arguments_ui(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument(
        "--kubeconfig",
        help="where the API server is and which CA to trust (default: in-cluster, then ~/.kube/config); "
        "its credentials are never used for people's requests",
    )
    parser.add_argument(
        "--triggers",
        action="store_true",
        help="serve HttpTriggers at /api/h/<namespace>/<route>, creating their runs with the credentials of "
        "--trigger-kubeconfig (or the in-cluster service account)",
    )
    parser.add_argument(
        "--trigger-kubeconfig", help="the identity that reads HttpTriggers and creates their runs"
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=60.0,
        help="the longest jobs/run_wait_result waits for a result (default: 60)",
    )
    parser.add_argument(
        "--static", type=Path, help="serve the front end from this directory (default: bundled)"
    )


def cli_ui(args: argparse.Namespace) -> int:
    from kubemill.ui.server import STATIC, build_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    location = ApiServer.from_kubeconfig(args.kubeconfig)
    trigger_token = None
    if args.triggers:
        identity = ApiServer.from_kubeconfig(args.trigger_kubeconfig) if args.trigger_kubeconfig else location
        trigger_token = identity.token
        if not trigger_token:
            print(
                "kubemill ui: --triggers needs a bearer token (a service account's) to act with", flush=True
            )
            return 2
    server = ApiServer(location.url, location.ssl_context, trigger_token)
    app = build_app(
        server, static=args.static or STATIC, triggers=args.triggers, wait_seconds=args.wait_seconds
    )
    print(f"kubemill ui listening on http://{args.host}:{args.port} (API server {server.url})", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0

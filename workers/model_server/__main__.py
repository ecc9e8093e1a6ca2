"""Command line: ``python -m workers.model_server --model PATH --name NAME --port PORT``.

Loads the ONNX model (exiting non-zero with a one-line message on stderr if that fails) and
only then starts listening, so the readiness endpoints never answer before the model is
loaded. SIGTERM/SIGINT stop accepting connections, let in-flight requests finish, and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

PROG = "python -m workers.model_server"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve an ONNX model over the Open Inference Protocol (KServe v2 REST).",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a .onnx file, or a directory holding model.onnx or <version>/model.onnx",
    )
    parser.add_argument("--name", required=True, help="model name used in /v2/models/{name}")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default info)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if not args.name or "/" in args.name:
        parser.error("--name must be non-empty and must not contain '/'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("serveplane.model_server")

    # Imported here so that `--help` and argument errors stay fast.
    import uvicorn

    from .onnx_server import (
        ENV_MODEL_NAME,
        ENV_MODEL_PATH,
        ModelLoadError,
        create_app,
        load_model,
    )

    try:
        model = load_model(args.model, args.name)
        app = create_app(model) if args.workers == 1 else None
    except ModelLoadError as exc:
        print(f"model_server: error: failed to load model {exc}", file=sys.stderr, flush=True)
        return 1

    common = {
        "host": args.host,
        "port": args.port,
        "access_log": False,
        "log_level": "warning" if args.log_level in ("info", "debug") else args.log_level,
        "server_header": False,
        "date_header": False,
        "lifespan": "on",
        "loop": "auto",  # uvloop when installed
        "http": "auto",  # httptools when installed
    }
    log.info(
        "serving model %r from %s on http://%s:%d (%d worker%s)",
        args.name,
        model.path,
        args.host,
        args.port,
        args.workers,
        "" if args.workers == 1 else "s",
    )

    # uvicorn restores the previous SIGTERM/SIGINT handlers after its graceful shutdown and
    # re-raises the signal it caught; a no-op handler turns that into a normal exit (status 0).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)

    if app is not None:
        uvicorn.run(app, **common)
    else:
        # Each worker process loads its own session via the factory; the load above only
        # validated the model so that failures are reported before any process is forked.
        os.environ[ENV_MODEL_PATH] = str(model.path)
        os.environ[ENV_MODEL_NAME] = args.name
        del model
        uvicorn.run(
            "workers.model_server.onnx_server:create_app_from_env",
            factory=True,
            workers=args.workers,
            **common,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `voicefleet` command: one entry point for the runtime and the operator.

Each subcommand imports its layer lazily, so `voicefleet serve` in a runtime pod never
loads kopf or the Kubernetes client, and `voicefleet crd` never loads a model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from voicefleet_runtime.server import serve

    return serve(host=args.host, port=args.port, model=args.model, tts_model=args.tts_model)


def _operator(args: argparse.Namespace) -> int:
    from voicefleet_operator.main import run_operator

    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        standalone=args.standalone,
        liveness_endpoint=args.liveness,
    )


def _crd(args: argparse.Namespace) -> int:
    from voicefleet_operator.crd.generate import render_crd_yaml

    text = render_crd_yaml()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.check)
    if not path.exists() or path.read_text() != text:
        sys.stderr.write(
            f"{path} is out of date with the pydantic models; regenerate it with:\n"
            f"  voicefleet crd > {path}\n"
        )
        return 1
    return 0


def _render(args: argparse.Namespace) -> int:
    from voicefleet_operator.render import render_file

    try:
        text = render_file(Path(args.file), prometheus_operator=args.with_servicemonitor)
    except SystemExit:
        raise
    except Exception as error:  # a bug, not the user's input: still one line, no traceback
        sys.stderr.write(f"voicefleet render: internal error: {type(error).__name__}: {error}\n")
        return 2
    sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicefleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the speech runtime (other settings from VOICEFLEET_* env)"
    )
    serve.add_argument("--host", default=None, help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port to bind (default 8000)")
    serve.add_argument("--model", default=None, help="model name (tiny.en, base, ...) or path")
    serve.add_argument(
        "--tts-model",
        default=None,
        choices=["kokoro"],
        help="serve text-to-speech on /v1/audio/speech; alone: TTS only, with --model: both",
    )
    serve.set_defaults(handler=_serve)

    op = commands.add_parser("operator", help="run the operator against the current kubeconfig")
    op.add_argument(
        "--namespace", "-n", action="append", default=[], help="namespace to watch (repeatable)"
    )
    op.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    op.add_argument(
        "--standalone", action="store_true", help="no peering: for a single replica or a laptop"
    )
    op.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    op.set_defaults(handler=_operator)

    crd = commands.add_parser("crd", help="print the VoiceService CustomResourceDefinition")
    crd.add_argument("--check", metavar="FILE", default=None, help="fail if FILE differs")
    crd.set_defaults(handler=_crd)

    render = commands.add_parser(
        "render", help="print the children the operator would create for a VoiceService"
    )
    render.add_argument("-f", "--file", required=True, help="a VoiceService YAML file, or -")
    render.add_argument(
        "--with-servicemonitor",
        action="store_true",
        help="render as if the cluster serves monitoring.coreos.com (prometheus-operator)",
    )
    render.set_defaults(handler=_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

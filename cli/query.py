"""`plexrec query`: argument parsing only; the work is done by serving.client."""

from __future__ import annotations

import argparse
import json

from plexrec.features.errors import ConfigError


def _id_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer ids, got {text!r}")\
            from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="query a running plexrec server (prints JSON)",
                       description="Calls the EmbeddingService; on an RPC error prints "
                                   "`error: <STATUS>: <message>` and exits 2.")
    p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline per call in seconds")
    p.add_argument("--version", dest="snapshot_version", default="",
                   help="snapshot version to ask (default: the server's current one)")
    p.add_argument("--tls-ca", default=None,
                   help="connect over TLS, trusting this CA certificate (PEM)")
    p.add_argument("--tls-cert", default=None, help="client certificate for mutual TLS (PEM)")
    p.add_argument("--tls-key", default=None, help="key of --tls-cert (PEM)")
    p.add_argument("--server-name", default=None,
                   help="name to check the server certificate against (default: the host)")
    p.add_argument("--token-file", default=None,
                   help="file holding the bearer token (default: $PLEXREC_TOKEN; a token is "
                        "never taken on the command line, where ps would show it)")
    q = p.add_subparsers(dest="query_command", required=True, metavar="QUERY")
    info = q.add_parser("info", help="model info")
    info.set_defaults(func=run_info)
    emb = q.add_parser("embeddings", help="stored vectors of ids")
    emb.add_argument("--entity", choices=("user", "item"), required=True,
                     help="whose vectors: user or item")
    emb.add_argument("--ids", type=_id_list, required=True, help="comma-separated ids")
    emb.add_argument("--encoding", choices=("float32", "stored"), default="float32",
                     help="float32 (decoded by the server) or stored (the snapshot's codes and "
                          "scales, decoded here); the vectors printed are float32 either way")
    emb.add_argument("--width", type=int, default=0,
                     help="only the first WIDTH values of each vector (0: all)")
    emb.set_defaults(func=run_embeddings)
    ret = q.add_parser("retrieve", help="top-k items for a user")
    ret.add_argument("--user", type=int, default=None, help="known user id")
    ret.add_argument("--features", default=None,
                     help='raw user features as JSON, e.g. {"age": "31", "genres": "a|b"}')
    ret.add_argument("--k", type=int, default=10, help="how many items to return")
    ret.add_argument("--exclude", type=_id_list, default=[], help="item ids to leave out")
    ret.add_argument("--width", type=int, default=0,
                     help="score by the first WIDTH values of the vectors (0: all)")
    ret.set_defaults(func=run_retrieve)


def _client(args: argparse.Namespace):  # noqa: ANN202 - lazy import keeps `plexrec -h` fast
    import os
    from pathlib import Path

    from plexrec.serving.client import EmbeddingClient, channel_credentials

    tls = None
    if args.tls_ca or args.tls_cert:
        tls = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = os.environ.get("PLEXREC_TOKEN")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file: cannot read {args.token_file}: "
                              f"{exc.strerror}") from None
    return EmbeddingClient(args.target, timeout=args.timeout, tls=tls, token=token or None,
                           server_name=args.server_name)


def run_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.info(args.snapshot_version), sort_keys=True))
    return 0


def run_embeddings(args: argparse.Namespace) -> int:
    with _client(args) as client:
        r = client.embeddings(args.entity, args.ids, args.snapshot_version,
                              encoding=args.encoding, width=args.width)
    print(json.dumps({"version": r.version, "found_ids": r.found_ids.tolist(),
                      "missing_ids": r.missing_ids.tolist(),
                      "vectors": r.vectors.tolist()}))
    return 0


def run_retrieve(args: argparse.Namespace) -> int:
    if (args.user is None) == (args.features is None):
        raise ConfigError("retrieve: give exactly one of --user or --features")
    features = None
    if args.features is not None:
        try:
            features = json.loads(args.features)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--features: not valid JSON: {exc}") from exc
        if not isinstance(features, dict):
            raise ConfigError("--features: expected a JSON object of name -> value")
    with _client(args) as client:
        r = client.retrieve(user_id=args.user, user_features=features, k=args.k,
                            exclude=args.exclude, version=args.snapshot_version,
                            width=args.width)
    print(json.dumps({"version": r.version, "item_ids": r.item_ids.tolist(),
                      "scores": [round(float(s), 6) for s in r.scores]}))
    return 0

#!/usr/bin/python3
"""A Python client for blip2-serve, on Debian's python3-grpcio.

The stubs come from our proto: the build generates them into
build/clients/python (blip2_pb2.py, blip2_pb2_grpc.py); point --stubs (or
$BLIP2_PY_STUBS) elsewhere if you built elsewhere, or generate them yourself:

    protoc -Iproto --python_out=OUT --grpc_python_out=OUT \
        --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin proto/blip2.proto

Examples:
    python3 clients/python/blip2_client.py --target 127.0.0.1:50051 caption tests/fixtures/images/chelsea.jpg
    python3 clients/python/blip2_client.py answer photo.jpg "what is the dog doing?"
    python3 clients/python/blip2_client.py generate photo.jpg --prompt "a photo of" --max-new-tokens 20
    python3 clients/python/blip2_client.py batch a.jpg b.jpg c.jpg
    python3 clients/python/blip2_client.py info
    BLIP2_API_KEY=... python3 clients/python/blip2_client.py --tls --ca ca.pem --target host:50051 info
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_STUBS = os.path.join(HERE, "..", "..", "build", "clients", "python")


def load_stubs(path):
    sys.path.insert(0, os.path.abspath(path))
    try:
        import blip2_pb2  # noqa: F401
        import blip2_pb2_grpc  # noqa: F401
    except ImportError as e:
        sys.exit(f"blip2_client: cannot import the generated stubs from {path} ({e}); build the project or pass --stubs")
    return sys.modules["blip2_pb2"], sys.modules["blip2_pb2_grpc"]


OPTION_FLAGS = {  # DecodingOptions field -> type; each is a --flag-with-dashes
    "max_new_tokens": int, "min_new_tokens": int, "num_beams": int, "length_penalty": float,
    "num_return_sequences": int, "temperature": float, "top_k": int, "top_p": float,
    "repetition_penalty": float, "no_repeat_ngram_size": int, "seed": int,
}
EARLY_STOPPING = {"true": "EARLY_STOPPING_TRUE", "false": "EARLY_STOPPING_FALSE", "never": "EARLY_STOPPING_NEVER"}


def decoding_options(pb, args):
    options = pb.DecodingOptions()
    for field in OPTION_FLAGS:
        value = getattr(args, field)
        if value is not None:
            setattr(options, field, value)
    if args.do_sample:
        options.do_sample = True
    if args.early_stopping is not None:
        options.early_stopping = pb.DecodingOptions.EarlyStopping.Value(EARLY_STOPPING[args.early_stopping])
    options.stop.extend(args.stop or [])
    return options


def image(pb, path):
    with open(path, "rb") as f:
        return pb.Image(data=f.read())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel(grpc, args):
    if not args.tls:
        if args.ca or args.cert or args.key:
            sys.exit("blip2_client: --ca, --cert and --key need --tls")
        return grpc.insecure_channel(args.target)
    if bool(args.cert) != bool(args.key):
        sys.exit("blip2_client: a client certificate needs its key (--cert with --key)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca) if args.ca else None,
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None)
    return grpc.secure_channel(args.target, credentials)


def api_key(args):
    """From --api-key-file (its first line) or $BLIP2_API_KEY; never a flag value, which `ps` shows."""
    if args.api_key_file:
        with open(args.api_key_file) as f:
            return f.readline().strip()
    return os.environ.get("BLIP2_API_KEY", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=os.environ.get("BLIP2_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--stubs", default=os.environ.get("BLIP2_PY_STUBS", DEFAULT_STUBS))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds")
    parser.add_argument("--tls", action="store_true", help="TLS, trusting --ca (default: the system's roots)")
    parser.add_argument("--ca", help="PEM CA bundle that signed the server's certificate")
    parser.add_argument("--cert", help="PEM client certificate (mutual TLS), with --key")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("--api-key-file", help="a file whose first line is the API key (default: $BLIP2_API_KEY)")
    for field, kind in OPTION_FLAGS.items():
        parser.add_argument("--" + field.replace("_", "-"), type=kind)
    parser.add_argument("--do-sample", action="store_true")
    parser.add_argument("--early-stopping", choices=sorted(EARLY_STOPPING))
    parser.add_argument("--stop", action="append")
    sub = parser.add_subparsers(dest="call", required=True)
    sub.add_parser("caption").add_argument("image")
    answer = sub.add_parser("answer")
    answer.add_argument("image")
    answer.add_argument("question")
    generate = sub.add_parser("generate")
    generate.add_argument("image")
    generate.add_argument("--prompt", default="")
    sub.add_parser("batch").add_argument("images", nargs="+")
    sub.add_parser("info")
    rank = sub.add_parser("rank", help="rank texts for an image (retrieval checkpoint): best match first")
    rank.add_argument("image")
    rank.add_argument("texts", nargs="+")
    args = parser.parse_args()

    import grpc

    pb, pb_grpc = load_stubs(args.stubs)
    stub = pb_grpc.Blip2Stub(channel(grpc, args))
    # Every call's deadline and, when there is a key, "authorization: Bearer KEY".
    kw = {"timeout": args.timeout, "metadata": [("authorization", "Bearer " + key)] if (key := api_key(args)) else None}
    options = decoding_options(pb, args)
    try:
        if args.call == "caption":
            done = stub.Caption(pb.CaptionRequest(image=image(pb, args.image), options=options), **kw)
            for s in done.sequences:
                print(s.text)
        elif args.call == "answer":
            request = pb.AnswerRequest(image=image(pb, args.image), question=args.question, options=options)
            for s in stub.Answer(request, **kw).sequences:
                print(s.text)
        elif args.call == "generate":
            request = pb.GenerateRequest(image=image(pb, args.image), prompt=args.prompt, options=options)
            for message in stub.Generate(request, **kw):
                if message.HasField("final"):
                    print()
                    u = message.final.usage
                    print(f"generated_tokens={u.generated_tokens} ttft_ms={u.time_to_first_token_ms:.1f} "
                          f"total_ms={u.total_ms:.1f}", file=sys.stderr)
                else:
                    print(message.text, end="", flush=True)
        elif args.call == "batch":
            items = [pb.BatchItem(image=image(pb, path)) for path in args.images]
            failed = 0
            for result in stub.GenerateBatch(pb.GenerateBatchRequest(items=items, options=options),
                                             **kw):
                if result.code == 0:
                    print(f"{result.index}\t{result.completion.sequences[0].text}")
                else:
                    failed += 1
                    print(f"{result.index}\terror {result.code}: "
                          f"{result.message}")
            return 1 if failed else 0
        elif args.call == "info":
            print(stub.GetModelInfo(pb.GetModelInfoRequest(), **kw))
        elif args.call == "rank":
            response = stub.Match(pb.MatchRequest(image=image(pb, args.image), texts=args.texts), **kw)
            # Best ITM match first; the same lines `blip2 client match` prints.
            for m in sorted(response.matches, key=lambda m: -m.match_probability):
                cut = "\t(truncated)" if m.truncated else ""
                print(f"{m.match_probability:.6f}\t{m.similarity:.6f}\t{args.texts[m.index]}{cut}")
    except grpc.RpcError as e:
        print(f"blip2_client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

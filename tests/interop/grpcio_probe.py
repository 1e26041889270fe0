#!/usr/bin/python3
"""grpcio_probe: a Python grpcio (gRPC C-core) client for unix sockets, making raw calls
on one channel; the same interface as grpc_go_probe.go.

Usage: grpcio_probe.py --socket PATH [--authority MODE] KIND:METHOD:HEX...
  MODE: default (grpcio's own for a unix: target), raw (the socket path, as grpc-go
  sends for a bare-path target), encoded (the path percent-encoded, as newer grpc-go
  sends), or any other literal value.
Prints one line per call: "ok HEX" or "err CODE MESSAGE". Exit 2 if the channel is
not ready within 10 s.
"""
import argparse
import sys
import urllib.parse

import grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--authority", default="default")
    ap.add_argument("calls", nargs="*")
    a = ap.parse_args()
    options = []
    if a.authority == "raw":
        options.append(("grpc.default_authority", a.socket))
    elif a.authority == "encoded":
        options.append(("grpc.default_authority", urllib.parse.quote(a.socket, safe="")))
    elif a.authority != "default":
        options.append(("grpc.default_authority", a.authority))
    channel = grpc.insecure_channel("unix:" + a.socket, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print(f"channel to {a.socket} not ready", file=sys.stderr)
        sys.exit(2)
    for call in a.calls:
        kind, method, req = call.split(":", 2)
        req = bytes.fromhex(req)
        try:
            if kind == "unary":
                resp = channel.unary_unary(method)(req, timeout=10)
            elif kind == "stream":
                it = channel.unary_stream(method)(req, timeout=10)
                resp = next(it)
                it.cancel()
            else:
                print(f"bad kind {kind!r}", file=sys.stderr)
                sys.exit(2)
        except grpc.RpcError as e:
            msg = (e.details() or "").replace("\n", " ")
            print(f"err {e.code().name} {msg}")
            continue
        print(f"ok {resp.hex()}")
    channel.close()


if __name__ == "__main__":
    main()

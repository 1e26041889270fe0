// grpc_go_probe: a grpc-go client that dials a unix socket exactly as the kubelet does
// (bare socket path as the target, a context dialer for "unix", insecure, blocking), with
// or without WithAuthority, and makes raw calls on one connection.
//
// Usage: grpc_go_probe -socket PATH [-authority A] KIND:METHOD:HEX...
//   KIND is unary or stream (first message of a server stream); HEX is the request.
// Prints one line per call: "ok HEX" or "err CODE MESSAGE". Exit 2 if the dial fails.
//
// Built in GOPATH mode from Debian's golang-google-grpc-dev (see scripts/deps.sh); the
// kubelet's plugin watcher dials like -authority "", its device manager (1.26+) like
// -authority localhost.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rawCodec passes request and response bytes through: the test encodes and decodes them.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b := v.(*[]byte)
	*b = append((*b)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	socket := flag.String("socket", "", "unix socket path")
	authority := flag.String("authority", "", "WithAuthority value (empty: none)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}),
	}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.DialContext(ctx, *socket, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", *socket, err)
		os.Exit(2)
	}
	defer conn.Close()
	for _, call := range flag.Args() {
		parts := strings.SplitN(call, ":", 3)
		if len(parts) != 3 {
			fmt.Fprintf(os.Stderr, "bad call %q\n", call)
			os.Exit(2)
		}
		req, err := hex.DecodeString(parts[2])
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad hex in %q: %v\n", call, err)
			os.Exit(2)
		}
		var resp []byte
		switch parts[0] {
		case "unary":
			err = conn.Invoke(ctx, parts[1], &req, &resp, grpc.ForceCodec(rawCodec{}))
		case "stream":
			var cs grpc.ClientStream
			sctx, scancel := context.WithCancel(ctx)
			cs, err = conn.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true}, parts[1], grpc.ForceCodec(rawCodec{}))
			if err == nil {
				if err = cs.SendMsg(&req); err == nil {
					if err = cs.CloseSend(); err == nil {
						err = cs.RecvMsg(&resp)
					}
				}
			}
			scancel()
		default:
			fmt.Fprintf(os.Stderr, "bad kind %q\n", parts[0])
			os.Exit(2)
		}
		if err != nil {
			st, _ := status.FromError(err)
			fmt.Printf("err %s %s\n", st.Code(), strings.ReplaceAll(st.Message(), "\n", " "))
			continue
		}
		fmt.Printf("ok %s\n", hex.EncodeToString(resp))
	}
}

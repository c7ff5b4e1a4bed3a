package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/bench/proxy"
)

func init() { extraCommands = append(extraCommands, newProxyCmd) }

type proxyFlags struct {
	listen    string
	target    string
	latency   time.Duration
	jitter    time.Duration
	bandwidth string
	control   string
}

func newProxyCmd() *cobra.Command {
	f := &proxyFlags{}
	cmd := &cobra.Command{
		Use:   "proxy --target HOST:PORT [--listen ADDR] [--latency D] [--bandwidth RATE]",
		Short: "Run a TCP proxy that simulates a WAN link: latency, bandwidth cap, cuts (foreground)",
		Long: `Forward every connection to --target, adding --latency in each direction
(a round trip gains twice as much) and capping each direction at --bandwidth.
Bytes are not inspected: TLS passes through unchanged.

  twinblock proxy --listen 127.0.0.1:7790 --target 127.0.0.1:7789 --latency 2.5ms --bandwidth 100M

Bandwidth is in bytes per second: 100M, 100MB/s, 64KiB, or in bits: 1Gbit.

With --control, a small HTTP API drives faults and settings live:

  curl -X POST 127.0.0.1:7791/cut          # reset every connection, reset new ones
  curl -X POST 127.0.0.1:7791/blackhole    # keep connections, drop every byte
  curl -X POST 127.0.0.1:7791/stall        # hold every byte until restore
  curl -X POST 127.0.0.1:7791/restore
  curl -X POST '127.0.0.1:7791/latency?d=5ms'
  curl -X POST '127.0.0.1:7791/bandwidth?bps=10M'
  curl 127.0.0.1:7791/stats

Runs until SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runProxy(ctx, f, cmd)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7790", "address to listen on")
	fl.StringVar(&f.target, "target", "", "address to forward to (required)")
	fl.DurationVar(&f.latency, "latency", 0, "one-way delay added in each direction")
	fl.DurationVar(&f.jitter, "jitter", 0, "random extra delay per chunk, up to this much (never reorders)")
	fl.StringVar(&f.bandwidth, "bandwidth", "0", "cap per direction per connection in bytes/s, e.g. 100M; 0 = unlimited")
	fl.StringVar(&f.control, "control", "", "address for the HTTP control API (e.g. 127.0.0.1:7791); empty = none")
	return cmd
}

func runProxy(ctx context.Context, f *proxyFlags, cmd *cobra.Command) error {
	if f.target == "" {
		return errors.New("--target: required")
	}
	bps, err := proxy.ParseBandwidth(f.bandwidth)
	if err != nil {
		return fmt.Errorf("--bandwidth: %w", err)
	}
	log := slog.Default()
	p, err := proxy.Start(proxy.Options{
		Listen:    f.listen,
		Target:    f.target,
		Latency:   f.latency,
		Jitter:    f.jitter,
		Bandwidth: bps,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer p.Close()

	var srv *http.Server
	serveErr := make(chan error, 1)
	if f.control != "" {
		ln, err := net.Listen("tcp", f.control)
		if err != nil {
			return fmt.Errorf("--control: %w", err)
		}
		srv = &http.Server{Handler: p.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { serveErr <- srv.Serve(ln) }()
		log.Info("proxy control API", "addr", ln.Addr().String())
	}
	log.Info("proxy running", "listen", p.Addr(), "target", f.target,
		"latency", f.latency, "jitter", f.jitter, "bandwidth", proxy.FormatBandwidth(bps))
	fmt.Fprintf(cmd.OutOrStdout(), "proxy %s -> %s\n", p.Addr(), f.target)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("control API: %w", err)
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	st := p.Stats()
	log.Info("proxy stopped", "to_target", st.BytesToTarget, "to_client", st.BytesToClient,
		"dropped", st.BytesDropped, "accepted", st.Accepted, "refused", st.Refused)
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/config"
)

func init() {
	extraCommands = append(extraCommands, newBenchCmd)
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks with baselines in the same run",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchNBDCmd())
	for _, add := range benchSubcommands {
		cmd.AddCommand(add())
	}
	return cmd
}

// benchSubcommands lets other files of this package add `bench` subcommands
// from their init functions.
var benchSubcommands []func() *cobra.Command

type benchNBDFlags struct {
	runtime, ramp, startTimeout time.Duration
	repeat                      int
	size                        config.Size
	servers, workloads, trans   []string
	out, fio, nbdkit            string
	serveArgs                   []string
}

func newBenchNBDCmd() *cobra.Command {
	f := &benchNBDFlags{size: 1 << 30}
	cmd := &cobra.Command{
		Use:   "nbd",
		Short: "fio over NBD against twinblock, nbdkit and go-nbd (TCP and unix socket)",
		Long: `Run fio --ioengine=nbd against three servers in one run, each with a 1 GiB
in-memory disk: twinblock (this binary, serve --backend mem), nbdkit's memory
plugin, and go-nbd's stock server. Workloads: ` + strings.Join(benchWorkloadNames(), ", ") + `,
each over TCP and a unix socket. Every cell runs --repeat times, servers
interleaved, and the table shows medians and ratios against nbdkit.

  twinblock bench nbd --out docs/bench
  twinblock bench nbd --runtime 3s --repeat 1 --workloads 4k-randwrite-qd32 --transports unix

Writes DIR/nbd.md (table, command, machine), DIR/nbd.json (medians and every
sample) and DIR/nbd.svg (IOPS relative to nbdkit). Needs fio and nbdkit
(Debian: apt-get install fio nbdkit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return f.run(ctx, cmd)
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&f.runtime, "runtime", 10*time.Second, "measured time of each fio sample")
	fl.DurationVar(&f.ramp, "ramp", 2*time.Second, "unmeasured warm-up before each sample (fio --ramp_time)")
	fl.IntVar(&f.repeat, "repeat", 3, "samples per cell; the table shows medians")
	fl.Var(&f.size, "size", "disk size of every server and the region fio uses")
	fl.StringSliceVar(&f.servers, "servers", bench.ServerNames, "servers to run")
	fl.StringSliceVar(&f.workloads, "workloads", benchWorkloadNames(), "workloads to run")
	fl.StringSliceVar(&f.trans, "transports", []string{"tcp", "unix"}, "transports: tcp, unix")
	fl.StringVar(&f.out, "out", "", "directory for nbd.md, nbd.json and nbd.svg (default: print only)")
	fl.StringVar(&f.fio, "fio", "fio", "fio binary")
	fl.StringVar(&f.nbdkit, "nbdkit", "nbdkit", "nbdkit binary")
	fl.DurationVar(&f.startTimeout, "start-timeout", 30*time.Second, "how long a server may take to accept connections")
	fl.StringArrayVar(&f.serveArgs, "serve-arg", nil, "extra argument for the twinblock serve child (repeatable)")
	return cmd
}

func benchWorkloadNames() []string {
	var n []string
	for _, w := range bench.Workloads {
		n = append(n, w.Name)
	}
	return n
}

func (f *benchNBDFlags) run(ctx context.Context, cmd *cobra.Command) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: finding this binary: %w", err)
	}
	rep, err := bench.Run(ctx, bench.Options{
		Servers:       f.servers,
		Workloads:     f.workloads,
		Transports:    f.trans,
		Runtime:       f.runtime,
		RampTime:      f.ramp,
		Repeat:        f.repeat,
		Size:          int64(f.size),
		Fio:           f.fio,
		Nbdkit:        f.nbdkit,
		Twinblock:     exe,
		TwinblockArgs: f.serveArgs,
		StartTimeout:  f.startTimeout,
		Progress:      cmd.ErrOrStderr(),
		Command:       commandLine(),
	})
	if rep == nil {
		return err
	}
	fmt.Fprint(cmd.OutOrStdout(), "\n"+rep.Table())
	if below := rep.BelowTarget(); len(below) > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "\ntwinblock below %.1fx nbdkit IOPS on %d row(s)\n", bench.Target, len(below))
	}
	if ctx.Err() != nil {
		// A partial run would overwrite a complete report in --out.
		fmt.Fprintln(cmd.ErrOrStderr(), "interrupted: partial results above, nothing written")
		return err
	}
	if f.out != "" {
		if werr := rep.WriteFiles(f.out); werr != nil {
			return errors.Join(err, fmt.Errorf("bench: writing report: %w", werr))
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", filepath.Join(f.out, "nbd.md"))
	}
	return err
}

// commandLine is how this run was invoked, for the report.
func commandLine() string {
	args := append([]string{"twinblock"}, os.Args[1:]...)
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			args[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(args, " ")
}

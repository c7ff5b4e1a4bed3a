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

	"github.com/twinblock/twinblock/bench/durable"
	"github.com/twinblock/twinblock/config"
)

func init() {
	benchSubcommands = append(benchSubcommands, newBenchJournalCmd, newBenchPairCmd)
}

// benchDurableFlags are the flags `bench journal` and `bench pair` share.
type benchDurableFlags struct {
	runtime, ramp, startTimeout time.Duration
	repeat                      int
	size                        config.Size
	dir, out, fio, taskset      string
	rows                        []string
	pin, keep                   bool
	// pair only
	wanLatency time.Duration
	wanModes   []string
}

func (f *benchDurableFlags) register(cmd *cobra.Command, pinDefault bool, rows []string) {
	fl := cmd.Flags()
	fl.DurationVar(&f.runtime, "runtime", 10*time.Second, "measured time of each sample (fio --runtime)")
	fl.DurationVar(&f.ramp, "ramp", 2*time.Second, "unmeasured warm-up before each sample (fio --ramp_time)")
	fl.IntVar(&f.repeat, "repeat", 3, "samples per row; the tables show medians")
	fl.Var(&f.size, "size", "size of each volume and of the region fio writes (default 1G)")
	fl.StringVar(&f.dir, "dir", ".", "where the work directory goes: put it on the disk under test")
	fl.StringVar(&f.out, "out", "docs/bench", `directory for the .md and .json report ("" = print only)`)
	fl.StringVar(&f.fio, "fio", "fio", "fio binary")
	fl.StringVar(&f.taskset, "taskset", "taskset", "taskset binary (util-linux)")
	fl.StringSliceVar(&f.rows, "rows", nil, "rows to run (default all): "+strings.Join(rows, ", "))
	fl.BoolVar(&f.pin, "pin", pinDefault, "pin daemons and fio with taskset (primary and fio on CPU 0, secondary and proxy on CPU 1)")
	fl.BoolVar(&f.keep, "keep", false, "keep the work directory (volumes, journals, configs, certificates) after the run")
	fl.DurationVar(&f.startTimeout, "start-timeout", 30*time.Second, "how long a daemon may take to serve (and a pair to connect)")
}

func (f *benchDurableFlags) options(cmd *cobra.Command) (durable.Options, error) {
	exe, err := os.Executable()
	if err != nil {
		return durable.Options{}, fmt.Errorf("bench: finding this binary: %w", err)
	}
	size := int64(f.size)
	if size == 0 {
		size = 1 << 30
	}
	return durable.Options{
		Twinblock: exe, Fio: f.fio, Taskset: f.taskset, Dir: f.dir,
		Runtime: f.runtime, RampTime: rampOption(f.ramp), Repeat: f.repeat, Size: size,
		Rows: f.rows, Pin: f.pin, Keep: f.keep, StartTimeout: f.startTimeout,
		WANLatency: f.wanLatency, WANModes: f.wanModes,
		Progress: cmd.ErrOrStderr(), Command: commandLine(),
	}, nil
}

// rampOption maps --ramp 0 ("no warm-up") to the option's "none".
func rampOption(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func newBenchJournalCmd() *cobra.Command {
	f := &benchDurableFlags{}
	cmd := &cobra.Command{
		Use:   "journal",
		Short: "Group commit and the cost of the journal against a plain write + fdatasync",
		Long: `Measure, in one run and in rounds, on the disk of --dir:

  baseline    fio psync 4 KiB random writes, fdatasync after each, on a file
  nbd-qd1     a standalone file volume (journal on) over NBD, fio 4k randwrite QD1
  nbd-qd32    the same at QD32
  journal-1   journal.Append in this process, 1 appender of 4 KiB records
  journal-32  the same with 32 concurrent appenders

Targets (issue 3): nbd-qd32 / nbd-qd1 IOPS >= 10 (group commit), nbd-qd1 p50
<= 1.3 x baseline p50, journal-32 / journal-1 appends/s >= 10.

  twinblock bench journal
  twinblock bench journal --runtime 3s --repeat 1 --rows baseline,nbd-qd1 --out ""

Writes DIR/journal.md and DIR/journal.json (command, machine, disk, every
sample). Needs fio (Debian: apt-get install fio).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd)
			if err != nil {
				return err
			}
			return runBenchReport(cmd, f.out, "journal", func(ctx context.Context) (*durable.Report, error) {
				return durable.RunJournal(ctx, o)
			})
		},
	}
	f.register(cmd, false, durable.JournalRows())
	return cmd
}

func newBenchPairCmd() *cobra.Command {
	f := &benchDurableFlags{}
	modes := []string{"sync", "memory", "async"}
	cmd := &cobra.Command{
		Use:   "pair",
		Short: "A synchronous pair against a standalone volume, on loopback and across a simulated WAN",
		Long: `Measure, in one run and in rounds, on the disk of --dir:

  streams2          fio psync 4 KiB write + fdatasync, two streams at once on two files
  rtt               loopback TCP round trip (64-byte ping-pong)
  standalone-qd32   a standalone file volume over NBD (unix socket), 4k randwrite QD32
  standalone-qd1    the same at QD1
  pair-qd32         a sync pair on loopback (mutual TLS, file backends), QD32
  pair-qd1          the same at QD1
  async-qd32        an async pair on loopback, QD32: what the second node costs
                    this machine without waiting for it (reference, no target)
  wan-MODE-qd32/1   the pair in MODE (--wan-modes) with twinblock proxy adding
                    --wan-latency each way between primary and secondary

With --pin (default) the secondary and the proxy run on CPU 1, the primary (or
the standalone daemon) and fio on CPU 0 (taskset; unpinned, and said so, when
taskset is missing). A pair is measured only once status says Connected.

Targets (issue 4): pair-qd32 >= 0.7 x standalone-qd32 IOPS; pair-qd1 p50 <= 1.3
x floor, floor = streams2 p50 + rtt p50; wan-sync-qd32 >= 0.8 x 32 / RTT IOPS
(5,120 at 2.5ms each way).

  twinblock bench pair
  twinblock bench pair --wan-modes sync --repeat 5

Writes DIR/pair.md and DIR/pair.json (command, machine, disk, every sample).
Needs fio (Debian: apt-get install fio) and taskset (util-linux).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd)
			if err != nil {
				return err
			}
			return runBenchReport(cmd, f.out, "pair", func(ctx context.Context) (*durable.Report, error) {
				return durable.RunPair(ctx, o)
			})
		},
	}
	f.register(cmd, true, durable.PairRows([]string{"MODE"}))
	cmd.Flags().DurationVar(&f.wanLatency, "wan-latency", 2500*time.Microsecond, "one-way delay the WAN proxy adds")
	cmd.Flags().StringSliceVar(&f.wanModes, "wan-modes", modes, "replication modes measured across the WAN proxy: sync, memory, async")
	return cmd
}

// benchReport is what the bench commands print and write.
type benchReport interface {
	Table() string
	Met() (met, total int)
	WriteFiles(dir string) error
}

// runBenchReport runs one benchmark, prints its tables and writes its
// files (not after an interrupt: a partial run would overwrite a complete
// report).
func runBenchReport[T any, R interface {
	*T
	benchReport
}](cmd *cobra.Command, out, name string, run func(context.Context) (R, error)) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx)
	if rep == nil {
		return err
	}
	fmt.Fprint(cmd.OutOrStdout(), "\n"+rep.Table())
	met, total := rep.Met()
	fmt.Fprintf(cmd.OutOrStdout(), "\n%d of %d targets met\n", met, total)
	if ctx.Err() != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "interrupted: partial results above, nothing written")
		return err
	}
	if werr := writeBenchFiles(cmd, out, name, rep.WriteFiles); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// writeBenchFiles writes a report's NAME.md and NAME.json into out with
// write, and says so; nothing when out is "".
func writeBenchFiles(cmd *cobra.Command, out, name string, write func(dir string) error) error {
	if out == "" {
		return nil
	}
	if err := write(out); err != nil {
		return fmt.Errorf("bench: writing report: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s and %s\n", filepath.Join(out, name+".md"), filepath.Join(out, name+".json"))
	return nil
}

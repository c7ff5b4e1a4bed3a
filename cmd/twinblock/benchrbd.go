//go:build ceph && pacific

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/bench/rbdbench"
	"github.com/twinblock/twinblock/config"
)

func init() {
	benchSubcommands = append(benchSubcommands, newBenchRBDCmd)
}

func newBenchRBDCmd() *cobra.Command {
	var (
		o    rbdbench.Options
		size config.Size
		out  string
		ramp time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rbd --ceph-conf FILE",
		Short: "A journal-fronted rbd volume against fio --ioengine=rbd on the same cluster",
		Long: `Measure, in one run and in rounds, on one Ceph cluster:

  raw-qd1, raw-qd32   fio --ioengine=rbd, 4k randwrite at QD1 and QD32 on a raw image
  tb-qd1, tb-qd32     the same through twinblock: fio --ioengine=nbd over a unix
                      socket to ` + "`twinblock serve`" + ` exporting an rbd volume whose
                      journal is in --dir

and report the ratios twinblock / raw of the QD1 p50 latency and the QD32
IOPS. Both images (--size each) are created in --pool, written once in full,
and removed at the end. Both clients run with rbd_cache=false.

  make bench-rbd       # starts a throw-away cluster (scripts/ceph-cluster.sh)
  twinblock bench rbd --ceph-conf /etc/ceph/ceph.conf --client admin --pool rbd

Writes DIR/rbd.md and DIR/rbd.json. Needs fio with its rbd engine (Debian's
fio has it) and the rbd CLI (ceph-common).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Twinblock = exe
			o.Size = int64(size)
			o.RampTime = ramp
			if ramp == 0 {
				o.RampTime = -1
			}
			o.Progress = cmd.ErrOrStderr()
			o.Command = commandLine()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := rbdbench.Run(ctx, o)
			if rep == nil || len(rep.Rows) == 0 || rep.Rows[rbdbench.RowRawQD1] == nil {
				return err
			}
			if err != nil || ctx.Err() != nil {
				return errors.Join(err, ctx.Err(), errors.New("bench rbd: incomplete run, nothing written"))
			}
			fmt.Fprint(cmd.OutOrStdout(), "\n"+rep.Table())
			return writeBenchFiles(cmd, out, "rbd", rep.WriteFiles)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.ConfFile, "ceph-conf", "/etc/ceph/ceph.conf", "ceph.conf of the cluster")
	fl.StringVar(&o.Keyring, "keyring", "", "keyring with the client's key (default: what ceph.conf says)")
	fl.StringVar(&o.Client, "client", "admin", "cephx client id")
	fl.StringVar(&o.Pool, "pool", "rbd", "pool for the two benchmark images")
	fl.Var(&size, "size", "size of each image and of the region fio writes (default 256M)")
	fl.StringVar(&o.Dir, "dir", ".", "where the work directory (twinblock's journal) goes: put it on the disk under test")
	fl.DurationVar(&o.Runtime, "runtime", 10*time.Second, "measured time of each sample")
	fl.DurationVar(&ramp, "ramp", 2*time.Second, "unmeasured warm-up before each sample")
	fl.IntVar(&o.Repeat, "repeat", 3, "rounds; the tables show medians")
	fl.StringVar(&o.Fio, "fio", "fio", "fio binary")
	fl.BoolVar(&o.Keep, "keep", false, "keep the work directory and the images")
	fl.StringVar(&out, "out", "docs/bench", `directory for rbd.md and rbd.json ("" = print only)`)
	return cmd
}

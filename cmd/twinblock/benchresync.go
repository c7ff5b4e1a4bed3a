package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/bench/resync"
	"github.com/twinblock/twinblock/config"
)

func init() {
	benchSubcommands = append(benchSubcommands, newBenchResyncCmd)
}

type benchResyncFlags struct {
	size                      config.Size
	changed                   float64
	repeat                    int
	cache, dir, out           string
	seed                      uint64
	keep                      bool
	startTimeout, passTimeout time.Duration
}

func newBenchResyncCmd() *cobra.Command {
	f := &benchResyncFlags{size: 4 << 30}
	cmd := &cobra.Command{
		Use:   "resync",
		Short: "Checksummed resync of a secondary that differs in 1% of its chunks, against reading the volume once",
		Long: `Write two images of --size (pseudo-random data, b a copy of a) in --dir, then
in each of --repeat rounds: rewrite --changed-percent of b's 64 KiB chunks with
random data, create a pair over the images (twinblock create --existing; b
starts Inconsistent and the primary resyncs it when they connect), with a
counting proxy on the peer link, and measure

  read once    a's image read in 4 MiB requests: O_DIRECT one at a time and
               4 in flight, and through the page cache (the baseline: the
               fastest of them)
  read both    both images read at once (context: the pair shares this disk)
  resync       the pass, until status says the peer is UpToDate: its time,
               the bytes on the wire (proxy, both ways) and sent_bytes

Targets (issue 5): wire bytes <= 1.5% of the volume; resync time <= 1.5 x
the time to read the volume once.

With --cache cold (default) every measurement starts after sync and
echo 3 > /proc/sys/vm/drop_caches (root only); --cache warm reads both
images into the page cache first instead (hashing and protocol only).

  twinblock bench resync --out docs/bench
  twinblock bench resync --size 256M --repeat 1 --out ""

Writes DIR/resync.md and DIR/resync.json. The 2 x --size of images are
removed at the end unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: finding this binary: %w", err)
			}
			return runBenchReport(cmd, f.out, "resync", func(ctx context.Context) (*resync.Report, error) {
				return resync.Run(ctx, resync.Options{
					Twinblock: exe, Dir: f.dir, Size: int64(f.size), Changed: f.changed / 100,
					Repeat: f.repeat, Cache: f.cache, Seed: f.seed, Keep: f.keep,
					StartTimeout: f.startTimeout, PassTimeout: f.passTimeout,
					Progress: cmd.ErrOrStderr(), Command: commandLine(),
				})
			})
		},
	}
	fl := cmd.Flags()
	fl.Var(&f.size, "size", "size of each image (a multiple of 64K)")
	fl.Float64Var(&f.changed, "changed-percent", 1, "share of the 64 KiB chunks rewritten on the secondary each round, in percent")
	fl.IntVar(&f.repeat, "repeat", 3, "rounds; the tables show medians")
	fl.StringVar(&f.cache, "cache", resync.CacheCold, "page cache at the start of each measurement: cold (drop_caches, needs root) or warm")
	fl.StringVar(&f.dir, "dir", ".", "where the work directory (2 x --size of images) goes: put it on the disk under test")
	fl.StringVar(&f.out, "out", "docs/bench", `directory for resync.md and resync.json ("" = print only)`)
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the images and of the chunks rewritten (0: random, reported)")
	fl.BoolVar(&f.keep, "keep", false, "keep the work directory (images, journals, configs, certificates)")
	fl.DurationVar(&f.startTimeout, "start-timeout", 30*time.Second, "how long a daemon may take to answer status")
	fl.DurationVar(&f.passTimeout, "pass-timeout", 10*time.Minute, "how long one resync pass may take")
	return cmd
}

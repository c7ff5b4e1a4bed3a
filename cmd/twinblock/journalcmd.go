package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/journal"
)

func init() { extraCommands = append(extraCommands, newJournalCmd) }

func newJournalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "journal",
		Short: "Inspect a volume's write-ahead journal",
	}
	var cfgPath, dir string
	dump := &cobra.Command{
		Use:   "dump [VOLUME]",
		Short: "Print the checkpoint, segments and records of a journal (read-only, safe while serving)",
		Long: `Print a journal: its checkpoint, each segment header, each record (seq, kind,
offset, length) and where each segment's valid records end, and why.

  twinblock journal dump vol0                 # volume from ./twinblock.yaml
  twinblock journal dump --dir ./vol0.img.journal`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := journalDumpOptions(cfgPath, dir, args)
			if err != nil {
				return err
			}
			if _, err := os.Stat(opts.Dir); err != nil {
				return fmt.Errorf("journal %s: %w", opts.Dir, err)
			}
			return journal.Dump(opts, cmd.OutOrStdout())
		},
	}
	dump.Flags().StringVarP(&cfgPath, "config", "c", "twinblock.yaml", "config file naming the volume")
	dump.Flags().StringVar(&dir, "dir", "", "journal directory (instead of a volume name)")
	cmd.AddCommand(dump)
	return cmd
}

func journalDumpOptions(cfgPath, dir string, args []string) (journal.Options, error) {
	if dir != "" {
		if len(args) > 0 {
			return journal.Options{}, errors.New("give a volume name or --dir, not both")
		}
		return journal.Options{Dir: dir}, nil
	}
	if len(args) == 0 {
		return journal.Options{}, errors.New("name a volume (or use --dir)")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return journal.Options{}, err
	}
	vc, ok := cfg.Volume(args[0])
	if !ok {
		return journal.Options{}, fmt.Errorf("no volume %q in %s", args[0], cfgPath)
	}
	if cfg.JournalDir(vc) == "" {
		return journal.Options{}, fmt.Errorf("volume %s has no journal (backend %s)", vc.Name, vc.Backend.Type)
	}
	return journalOptions(cfg, vc, slog.Default()), nil
}

// journalPending counts intact records above the checkpoint without
// modifying the journal (a missing journal has none).
func journalPending(opts journal.Options) (int, error) {
	if _, err := os.Stat(opts.Dir); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	var ckpt uint64
	n := 0
	err := journal.Inspect(opts, func(e journal.Entry) error {
		switch e.Type {
		case journal.EntryCheckpoint:
			ckpt = e.Seq
		case journal.EntryRecord:
			if e.Seq > ckpt {
				n++
			}
		}
		return nil
	})
	return n, err
}

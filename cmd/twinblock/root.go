package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "twinblock",
		Short: "Synchronous block replication over NBD",
		Long: `twinblock exports block volumes over NBD (qemu/KVM, Proxmox, nbd clients).

Quick start:
  twinblock create vol0 --path ./vol0.img --size 10G   # writes ./twinblock.yaml
  twinblock serve --config twinblock.yaml
  nbdinfo nbd://127.0.0.1:10809/vol0`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		return g.setupLogging()
	}
	root.AddCommand(newCreateCmd(), newServeCmd())
	for _, add := range extraCommands {
		root.AddCommand(add())
	}
	return root
}

// extraCommands lets other files of this package register subcommands
// without editing root.go.
var extraCommands []func() *cobra.Command

func (g *globalFlags) setupLogging() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(g.logLevel))); err != nil {
		return fmt.Errorf("--log-level: %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch g.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format: %q: want text or json", g.logFormat)
	}
	slog.SetDefault(slog.New(h))
	return nil
}

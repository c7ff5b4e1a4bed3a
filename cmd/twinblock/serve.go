package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/file"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/nbd"
)

type serveFlags struct {
	cfgPath  string
	listen   string
	socket   string
	name     string
	bType    string
	path     string
	size     config.Size
	readOnly bool
	drain    time.Duration
	admin    string
	cpuProf  string
}

func newServeCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve [--config FILE | --name NAME --backend file|mem ...]",
		Short: "Export volumes over NBD (runs in the foreground)",
		Long: `Export the volumes of a config file over NBD, or one volume described by flags:

  twinblock serve --config twinblock.yaml
  twinblock serve --name vol0 --backend file --path ./vol0.img
  twinblock serve --name scratch --backend mem --size 1G --socket /tmp/tb.sock

Clients attach with the volume name as export name:
  nbd://127.0.0.1:10809/vol0   or   nbd+unix:///vol0?socket=/tmp/tb.sock

SIGTERM or SIGINT stops accepting, answers every request in flight, flushes
the volumes and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if f.cpuProf != "" {
				pf, err := os.Create(f.cpuProf)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				if err := pprof.StartCPUProfile(pf); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer func() {
					pprof.StopCPUProfile()
					pf.Close()
				}()
			}
			return serve(ctx, cfg, f.drain)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.cfgPath, "config", "c", "", "config file (default twinblock.yaml when no --name is given)")
	fl.StringVar(&f.listen, "listen", "", "NBD TCP address, \"none\" to disable (default "+config.DefaultListen+")")
	fl.StringVar(&f.socket, "socket", "", "NBD unix socket path")
	fl.StringVar(&f.name, "name", "", "volume name (flag form: one volume without a config file)")
	fl.StringVar(&f.bType, "backend", "file", "flag form: backend type, file or mem")
	fl.StringVar(&f.path, "path", "", "flag form: backing file or block device")
	fl.Var(&f.size, "size", "flag form: size of a mem volume, e.g. 1G")
	fl.BoolVar(&f.readOnly, "read-only", false, "flag form: export read-only")
	fl.DurationVar(&f.drain, "drain-timeout", 30*time.Second, "how long shutdown waits for requests in flight")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a Go CPU profile to this file until the daemon stops (performance testing)")
	fl.StringVar(&f.admin, "admin", "", "admin socket for status/promote/demote (default: twinblock.sock beside the config file; none in flag form)")
	return cmd
}

func (f *serveFlags) config(cmd *cobra.Command) (*config.Config, error) {
	var cfg *config.Config
	if f.name != "" {
		if f.cfgPath != "" {
			return nil, errors.New("--name and --config: use one or the other")
		}
		cfg = &config.Config{Volumes: []config.Volume{{
			Name:     f.name,
			ReadOnly: f.readOnly,
			Backend:  config.Backend{Type: f.bType, Path: f.path, Size: f.size},
		}}}
		cfg.SetDir(".")
		cfg.NoAdmin = f.admin == ""
	} else {
		for _, fl := range []string{"backend", "path", "size", "read-only"} {
			if cmd.Flags().Changed(fl) {
				return nil, fmt.Errorf("--%s: only with --name (flag form); with a config file set it there", fl)
			}
		}
		p := f.cfgPath
		if p == "" {
			p = "twinblock.yaml"
		}
		c, err := config.Load(p)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.socket != "" {
		cfg.Socket = f.socket
	}
	if f.admin != "" {
		cfg.AdminSocket = f.admin
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// openBackend opens the storage a volume config describes.
func openBackend(cfg *config.Config, v *config.Volume) (backend.Backend, error) {
	switch v.Backend.Type {
	case "file":
		b, err := file.Open(cfg.Resolve(v.Backend.Path), file.Options{ReadOnly: v.ReadOnly})
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		return b, nil
	case "mem":
		return mem.New(int64(v.Backend.Size)), nil
	case "rbd":
		return openRBD(cfg, v)
	}
	return nil, fmt.Errorf("volume %s: backend.type: unknown backend %q", v.Name, v.Backend.Type)
}

// journalOptions are the journal settings of a volume.
func journalOptions(cfg *config.Config, vc *config.Volume, log *slog.Logger) journal.Options {
	return journal.Options{
		Dir:         cfg.JournalDir(vc),
		SegmentSize: int64(vc.Journal.SegmentSize),
		Logger:      log.With("volume", vc.Name, "journal", cfg.JournalDir(vc)),
	}
}

// openVolume opens backend and journal and replays the journal.
// volumeHooks are the daemon's parts a volume needs: its peer link setup
// and what to do when its role changes.
type volumeHooks struct {
	peers        *peerLinks
	onRoleChange func(engine.Role)
}

func openVolume(cfg *config.Config, vc *config.Volume, log *slog.Logger, hooks volumeHooks) (*engine.Volume, error) {
	be, err := openBackend(cfg, vc)
	if err != nil {
		return nil, err
	}
	var j *journal.Journal
	if dir := cfg.JournalDir(vc); dir != "" && !vc.ReadOnly {
		// Held until the process exits: the lock outlives the volume on
		// purpose (it guards the directory for the daemon's whole life).
		lf, err := lockDir(dir)
		if err != nil {
			be.Close()
			return nil, fmt.Errorf("volume %s: %w", vc.Name, err)
		}
		heldLocks = append(heldLocks, lf)
		j, err = journal.Open(journalOptions(cfg, vc, log))
		if err != nil {
			be.Close()
			return nil, fmt.Errorf("volume %s: %w", vc.Name, err)
		}
	} else if dir != "" && vc.ReadOnly {
		// A read-only export must still show every acknowledged write: refuse
		// to export while the journal holds records not yet in the backend.
		st, err := journalPending(journalOptions(cfg, vc, log))
		if err != nil {
			be.Close()
			return nil, fmt.Errorf("volume %s: %w", vc.Name, err)
		}
		if st > 0 {
			be.Close()
			return nil, fmt.Errorf("volume %s: journal holds %d records not yet applied; serve it read-write once to replay them", vc.Name, st)
		}
	}
	opts := engine.VolumeOptions{
		Name: vc.Name, Backend: be, Journal: j, ReadOnly: vc.ReadOnly,
		JournalMaxBytes: int64(vc.Journal.MaxSize), Logger: log,
		NodeID: cfg.Node, OnRoleChange: hooks.onRoleChange,
		// An RBD write is a network round trip to the OSDs: acknowledge
		// once the journal (and the peer) hold the write, and apply it to
		// the image in the background (reads wait for what they overlap).
		AsyncApply: vc.Backend.Type == "rbd" && j != nil,
	}
	if sp := cfg.StatePath(vc); sp != "" && j != nil {
		opts.State = &engine.FileState{Path: sp}
	}
	if hooks.peers != nil && j != nil {
		opts.Peer = hooks.peers.peerOptions(vc.Name, vc.Mode)
		opts.Resync = engine.ResyncOptions{
			MapPath:    filepath.Join(cfg.JournalDir(vc), "dirty.map"),
			RegionSize: uint64(vc.Resync.RegionSize),
			ChunkSize:  uint64(vc.Resync.ChunkSize),
			Rate:       int64(vc.Resync.Rate),
		}
	}
	v, err := engine.OpenVolume(opts)
	if err != nil {
		if j != nil {
			j.Close()
		}
		be.Close()
		return nil, err
	}
	return v, nil
}

func serve(ctx context.Context, cfg *config.Config, drain time.Duration) error {
	log := slog.Default()
	var vols []*engine.Volume
	defer func() {
		for _, v := range vols {
			if err := v.Close(); err != nil {
				log.Error("closing volume", "volume", v.Name(), "err", err)
			}
		}
	}()
	srv := nbd.NewServer(nbd.ServerOptions{Logger: log})
	var peers *peerLinks
	if cfg.Replication != nil {
		var err error
		if peers, err = newPeerLinks(cfg, log); err != nil {
			return err
		}
		defer peers.close()
	}
	for i := range cfg.Volumes {
		vc := &cfg.Volumes[i]
		export := &nbd.Export{Name: vc.Name, Description: vc.Description, ReadOnly: vc.ReadOnly}
		// Only the primary exports a volume: a secondary's copy changes
		// under any reader, and writing it would fork the data.
		hooks := volumeHooks{peers: peers, onRoleChange: func(r engine.Role) {
			if r == engine.RolePrimary {
				if err := srv.AddExport(export); err != nil {
					log.Error("exporting volume after promote", "volume", vc.Name, "err", err)
				} else {
					log.Info("exporting (primary)", "volume", vc.Name)
				}
				return
			}
			srv.RemoveExport(vc.Name)
			log.Info("export withdrawn (secondary)", "volume", vc.Name)
		}}
		v, err := openVolume(cfg, vc, log, hooks)
		if err != nil {
			return err
		}
		vols = append(vols, v)
		export.Device = nbdDevice{v}
		if peers != nil {
			peers.add(v)
		}
		if v.Role() == engine.RolePrimary {
			if err := srv.AddExport(export); err != nil {
				return err
			}
		} else {
			log.Info("secondary: not exported until promoted", "volume", vc.Name)
		}
	}
	if peers != nil {
		if err := peers.listen(ctx); err != nil {
			return err
		}
	}
	adminVols := make([]adminVolume, len(vols))
	for i, v := range vols {
		adminVols[i] = v
	}
	if !cfg.NoAdmin {
		adm, err := newAdminServer(cfg.AdminSocketPath(), adminVols, log)
		if err != nil {
			return err
		}
		defer adm.Close()
	}

	var listeners []net.Listener
	if cfg.Listen != "none" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		listeners = append(listeners, ln)
	}
	if cfg.Socket != "" {
		if err := removeStaleSocket(cfg.Socket); err != nil {
			return err
		}
		ln, err := net.Listen("unix", cfg.Socket)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		listeners = append(listeners, ln)
	}
	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func(ln net.Listener) { errc <- srv.Serve(ln) }(ln)
	}
	for _, v := range vols {
		if v.Role() != engine.RolePrimary {
			continue
		}
		for _, ln := range listeners {
			log.Info("exporting", "volume", v.Name(), "size", v.Size(), "read_only", v.ReadOnly(), "uri", exportURI(ln, v.Name()))
		}
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining requests in flight")
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	if cfg.Socket != "" {
		os.Remove(cfg.Socket)
	}
	log.Info("stopped")
	return serveErr
}

func exportURI(ln net.Listener, name string) string {
	if ln.Addr().Network() == "unix" {
		return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, ln.Addr().String())
	}
	return fmt.Sprintf("nbd://%s/%s", ln.Addr().String(), name)
}

// removeStaleSocket removes a socket file left by a process that is gone,
// and refuses to steal one a live server still answers on.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket: %s is in use by a running server", path)
	}
	return os.Remove(path)
}

// nbdDevice adapts an engine.Volume to nbd.Device, mapping engine errors to
// the NBD error codes a client should see.
type nbdDevice struct{ v *engine.Volume }

func (d nbdDevice) Size() uint64 { return d.v.Size() }
func (d nbdDevice) ReadAt(p []byte, off uint64) error {
	return mapErr(d.v.ReadAt(p, off))
}
func (d nbdDevice) WriteAt(p []byte, off uint64, fua bool) error {
	return mapErr(d.v.WriteAt(p, off, fua))
}
func (d nbdDevice) Trim(off uint64, n uint32, fua bool) error {
	return mapErr(d.v.Trim(off, n, fua))
}
func (d nbdDevice) WriteZeroes(off uint64, n uint32, noHole, fua bool) error {
	return mapErr(d.v.WriteZeroes(off, n, noHole, fua))
}
func (d nbdDevice) Flush() error { return mapErr(d.v.Flush()) }
func (d nbdDevice) ReceiveWrite(r io.Reader, off uint64, n uint32) (bool, error) {
	handled, err := d.v.ReceiveWrite(r, off, n)
	return handled, mapErr(err)
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrReadOnly), errors.Is(err, backend.ErrReadOnly):
		return fmt.Errorf("%w: %w", nbd.ErrPerm, err)
	case errors.Is(err, engine.ErrOutOfRange), errors.Is(err, backend.ErrOutOfRange):
		return fmt.Errorf("%w: %w", nbd.ErrInvalid, err)
	case errors.Is(err, engine.ErrClosed):
		return fmt.Errorf("%w: %w", nbd.ErrShutdown, err)
	case errors.Is(err, engine.ErrNotPrimary):
		return fmt.Errorf("%w: %w", nbd.ErrPerm, err)
	}
	return err
}

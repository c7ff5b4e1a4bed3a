package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/engine/backend/file"
	"github.com/twinblock/twinblock/engine/backend/rbd"
)

func newCreateCmd() *cobra.Command {
	var (
		cfgPath string
		bType   string
		path    string
		size    config.Size
		desc    string
		uuid    string
		role    string
		repl    config.Replication
		node    string
		tlsDir  string
		rb      config.Backend // --backend rbd settings
		jDir    string
		exist   bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME (--path FILE | --backend rbd --pool P --image I --journal-dir D) [--size SIZE]",
		Short: "Create a volume and add it to the config file",
		Long: `Create a volume: make its backing storage and add it to the config file
(created when missing). Sizes take binary units: 512M, 10G, 2T.

  twinblock create vol0 --path ./vol0.img --size 10G
  twinblock create vol1 --path /dev/vg0/vol1            # a raw block device keeps its size

A Ceph RBD image (needs a twinblock built with ` + "`make build-ceph`" + `); the journal
and state live in a local directory:

  twinblock create vol2 --backend rbd --pool rbd --image vol2 --size 100G \
      --ceph-conf /etc/ceph/ceph.conf --client twinblock --journal-dir /var/lib/twinblock/vol2

A new file or image must not exist yet; --existing takes the file or image
that is there, data and size, instead (a secondary made so gets a full
checksummed resync from the primary when they first connect).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := config.ValidName(name); err != nil {
				return err
			}
			switch bType {
			case "file":
				if path == "" {
					return errors.New("--path: required")
				}
				for _, f := range []string{"pool", "image", "namespace", "ceph-conf", "client", "keyring"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s: only with --backend rbd", f)
					}
				}
			case "rbd":
				if path != "" {
					return errors.New("--path: not used by --backend rbd (give --pool and --image)")
				}
				if jDir == "" {
					return errors.New("--journal-dir: required for --backend rbd (a local directory for the journal and state.json)")
				}
				if !exist && size <= 0 {
					return errors.New("--size: required for a new rbd image (e.g. --size 10G), or --existing to use an image that is there")
				}
			default:
				return fmt.Errorf("--backend: %q cannot be created (want file or rbd; mem volumes live only in `serve --backend mem`)", bType)
			}
			cfg, err := loadOrNewConfig(cfgPath)
			if err != nil {
				return err
			}
			if _, dup := cfg.Volume(name); dup {
				return fmt.Errorf("volume %q already exists in %s", name, cfgPath)
			}
			vol := config.Volume{Name: name, Description: desc}
			var abs string
			if bType == "file" {
				if abs, err = filepath.Abs(path); err != nil {
					return err
				}
				vol.Backend = config.Backend{Type: "file", Path: pathForConfig(cfgPath, abs)}
			} else {
				vol.Backend = rb
				vol.Backend.Type = "rbd"
				for _, p := range []*string{&vol.Backend.CephConf, &vol.Backend.Keyring} {
					if *p != "" {
						a, err := filepath.Abs(*p)
						if err != nil {
							return err
						}
						*p = pathForConfig(cfgPath, a)
					}
				}
			}
			if jDir != "" {
				a, err := filepath.Abs(jDir)
				if err != nil {
					return err
				}
				vol.Journal.Dir = pathForConfig(cfgPath, a)
			}
			cfg.Volumes = append(cfg.Volumes, vol)
			if err := applyReplicationFlags(cmd, cfg, cfgPath, node, tlsDir, repl); err != nil {
				return err
			}
			// Everything that can be checked without touching storage is
			// checked before anything is created.
			if err := cfg.Validate(); err != nil {
				return err
			}
			vc, _ := cfg.Volume(name)
			fs := &engine.FileState{Path: cfg.StatePath(vc)}
			if _, err := fs.Load(); err == nil {
				return fmt.Errorf("volume %s: %s already exists (a volume was created here before)", name, cfg.StatePath(vc))
			}

			var (
				where   string
				cleanup = func() {}
				hasData bool // storage that was there before: unknown contents
			)
			if bType == "file" {
				where = abs
				sz, created, err := createFileStorage(abs, size, exist)
				if err != nil {
					return err
				}
				size = sz
				hasData = !created
				if created {
					cleanup = func() { os.Remove(abs) }
				}
			} else {
				opts := rbdOptions(cfg, vc)
				where = "rbd image " + opts.Spec()
				sz, created, err := createRBDStorage(opts, size, exist)
				if err != nil {
					return fmt.Errorf("volume %s: %w", name, err)
				}
				size = sz
				hasData = !created
				if created {
					cleanup = func() {
						if err := rbd.Remove(opts); err != nil {
							fmt.Fprintf(cmd.ErrOrStderr(), "removing the new image %s after the error below: %v\n", opts.Spec(), err)
						}
					}
				}
			}
			st, err := initialState(uuid, role, uint64(size), cfg.Replication != nil)
			if err != nil {
				cleanup()
				return err
			}
			if hasData && st.Role == engine.RoleSecondary {
				// Its data is no copy of the primary's: the primary gives it
				// a full checksummed resync when they first connect.
				st.Disk = engine.DiskInconsistent
			}
			if hasData && st.Role == engine.RolePrimary && cfg.Replication != nil {
				// The peer cannot hold this data yet: compare everything
				// with it when it first connects (only what differs moves).
				st.PeerNeedsResync = true
			}
			if err := os.MkdirAll(cfg.JournalDir(vc), 0o755); err != nil {
				cleanup()
				return err
			}
			if err := fs.Save(st); err != nil {
				cleanup()
				return err
			}
			if err := cfg.WriteFile(cfgPath); err != nil {
				cleanup()
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "created volume %s: %s, %s (%d bytes); added to %s\n", name, where, size, int64(size), cfgPath)
			if cfg.Replication != nil {
				fmt.Fprintf(out, "uuid %s, role %s\n", st.UUID, st.Role)
				if st.Role == engine.RolePrimary {
					fmt.Fprintf(out, "on the peer: twinblock create %s --size %s --uuid %s --role secondary ...\n", name, size, st.UUID)
				}
			}
			fmt.Fprintf(out, "next: twinblock serve --config %s\n", cfgPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "twinblock.yaml", "config file to add the volume to (created when missing)")
	cmd.Flags().StringVar(&bType, "backend", "file", "backend type: file or rbd (Ceph: needs a twinblock built with make build-ceph)")
	cmd.Flags().StringVar(&path, "path", "", "backing file or block device")
	cmd.Flags().Var(&size, "size", "volume size, e.g. 10G (a new file or rbd image)")
	cmd.Flags().StringVar(&rb.Pool, "pool", "", "rbd: pool of the image")
	cmd.Flags().StringVar(&rb.Namespace, "namespace", "", "rbd: namespace in the pool (default: none)")
	cmd.Flags().StringVar(&rb.Image, "image", "", "rbd: image name")
	cmd.Flags().StringVar(&rb.CephConf, "ceph-conf", "", "rbd: ceph.conf of the cluster (default /etc/ceph/ceph.conf)")
	cmd.Flags().StringVar(&rb.Client, "client", "", "rbd: cephx client id without \"client.\" (default admin)")
	cmd.Flags().StringVar(&rb.Keyring, "keyring", "", "rbd: keyring with the client's key (default: what ceph.conf says)")
	cmd.Flags().BoolVar(&exist, "existing", false, "use the existing file or rbd image and its data (its size wins); a secondary made so gets a full checksummed resync")
	cmd.Flags().StringVar(&jDir, "journal-dir", "", "journal and state directory (required for rbd; default for a file: PATH.journal)")
	cmd.Flags().StringVar(&desc, "description", "", "description shown to NBD clients")
	cmd.Flags().StringVar(&uuid, "uuid", "", "volume uuid: give the primary's to create the peer's copy (default: a new one)")
	cmd.Flags().StringVar(&role, "role", "", "initial role: primary or secondary (default: primary for a new uuid, secondary with --uuid)")
	cmd.Flags().StringVar(&node, "node", "", "this node's id (sets the config's node)")
	cmd.Flags().StringVar(&repl.Listen, "replication-listen", "", "this node's peer-link address (sets replication.listen)")
	cmd.Flags().StringVar(&repl.Peer, "peer", "", "the peer's node id (sets replication.peer)")
	cmd.Flags().StringVar(&repl.PeerAddress, "peer-address", "", "the peer's peer-link address")
	cmd.Flags().StringVar(&repl.Mode, "mode", "", "replication mode: sync (default), memory, async")
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "directory with ca.pem, NODE.pem, NODE-key.pem (from `twinblock certs pair`)")
	cmd.Flags().BoolVar(&repl.InsecurePlaintext, "insecure-plaintext", false, "replicate without TLS (only on a link that is protected otherwise)")
	return cmd
}

// createFileStorage makes a volume's file, or takes a block device's
// size; created says whether a new file was made (to remove on failure).
func createFileStorage(abs string, size config.Size, existing bool) (config.Size, bool, error) {
	isDev, err := isBlockDevice(abs)
	if err != nil {
		return 0, false, err
	}
	if existing && !isDev {
		fi, err := os.Stat(abs)
		if err != nil {
			return 0, false, fmt.Errorf("--existing: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Size() <= 0 {
			return 0, false, fmt.Errorf("--existing: %s is not a non-empty regular file", abs)
		}
		if size > 0 && int64(size) != fi.Size() {
			return 0, false, fmt.Errorf("--size %s: the existing file %s holds %d bytes; leave --size out", size, abs, fi.Size())
		}
		return config.Size(fi.Size()), false, nil
	}
	if isDev {
		b, err := file.Open(abs, file.Options{})
		if err != nil {
			return 0, false, err
		}
		defer b.Close()
		return config.Size(b.Size()), false, nil
	}
	if size <= 0 {
		return 0, false, errors.New("--size: required for a file volume (e.g. --size 10G)")
	}
	b, err := file.Create(abs, int64(size), file.Options{})
	if err != nil {
		return 0, false, err
	}
	if err := b.Close(); err != nil {
		os.Remove(abs)
		return 0, false, err
	}
	return size, true, nil
}

// createRBDStorage makes a new image of size bytes, or with existing
// opens the image that is there and returns its size (a --size given too
// must match it).
func createRBDStorage(opts rbd.Options, size config.Size, existing bool) (config.Size, bool, error) {
	if existing {
		b, err := rbd.Open(opts)
		if err != nil {
			return 0, false, err
		}
		defer b.Close()
		got := config.Size(b.Size())
		if size > 0 && size != got {
			return 0, false, fmt.Errorf("--size %s: the existing image %s holds %s (%d bytes); leave --size out", size, opts.Spec(), got, int64(got))
		}
		return got, false, nil
	}
	b, err := rbd.Create(opts, int64(size))
	if errors.Is(err, rbd.ErrExists) {
		return 0, false, fmt.Errorf("%w (give --existing to use it as it is)", err)
	}
	if err != nil {
		return 0, false, err
	}
	if err := b.Close(); err != nil {
		_ = rbd.Remove(opts)
		return 0, false, err
	}
	return size, true, nil
}

// applyReplicationFlags fills the config's node and replication block from
// create's flags (only what was given; an existing block is kept).
func applyReplicationFlags(cmd *cobra.Command, cfg *config.Config, cfgPath, node, tlsDir string, r config.Replication) error {
	set := func(n string) bool { return cmd.Flags().Changed(n) }
	if !(set("node") || set("replication-listen") || set("peer") || set("peer-address") || set("mode") || set("tls-dir") || set("insecure-plaintext")) {
		return nil
	}
	if node != "" {
		cfg.Node = node
	}
	if cfg.Replication == nil {
		cfg.Replication = &config.Replication{}
	}
	c := cfg.Replication
	if r.Listen != "" {
		c.Listen = r.Listen
	}
	if r.Peer != "" {
		c.Peer = r.Peer
	}
	if r.PeerAddress != "" {
		c.PeerAddress = r.PeerAddress
	}
	if r.Mode != "" {
		c.Mode = r.Mode
	}
	if set("insecure-plaintext") {
		c.InsecurePlaintext = r.InsecurePlaintext
	}
	if tlsDir != "" {
		if cfg.Node == "" {
			return errors.New("--tls-dir: needs --node (the certificate files are named after it)")
		}
		abs, err := filepath.Abs(tlsDir)
		if err != nil {
			return err
		}
		c.TLS = config.TLS{
			CA:   pathForConfig(cfgPath, filepath.Join(abs, "ca.pem")),
			Cert: pathForConfig(cfgPath, filepath.Join(abs, cfg.Node+".pem")),
			Key:  pathForConfig(cfgPath, filepath.Join(abs, cfg.Node+"-key.pem")),
		}
	}
	return nil
}

// initialState is the state of a new volume. The first node of a pair
// makes the uuid and starts primary with a fresh generation that follows
// the all-zero generation 0; the second node takes the uuid, starts
// secondary at generation 0, and so catches up from the first record.
func initialState(uuid, role string, size uint64, replicated bool) (engine.State, error) {
	st := engine.State{Size: size, Disk: engine.DiskUpToDate}
	if uuid == "" {
		st.UUID = engine.NewUUID()
		if role == "" {
			role = "primary"
		}
	} else {
		b, err := engine.ParseUUID(uuid)
		if err != nil {
			return st, fmt.Errorf("--uuid: %w", err)
		}
		st.UUID = hex.EncodeToString(b[:])
		if role == "" {
			role = "secondary"
		}
	}
	switch role {
	case "primary":
		st.Role = engine.RolePrimary
		st.Generation = engine.NewGeneration()
		st.History = []engine.GenEntry{{Gen: 0, EndSeq: 0}}
	case "secondary":
		if !replicated {
			return st, errors.New("--role secondary: needs replication settings (--node, --peer, ...)")
		}
		st.Role = engine.RoleSecondary
		// Not UpToDate until it has heard from the primary: a secondary
		// that never connected must not be promoted without --force.
		st.Disk = engine.DiskOutdated
	default:
		return st, fmt.Errorf("--role: %q (want primary or secondary)", role)
	}
	return st, nil
}

// loadOrNewConfig reads path, or returns an empty config when it does not
// exist yet (create starts the file).
func loadOrNewConfig(path string) (*config.Config, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		c := &config.Config{Listen: config.DefaultListen}
		if err := c.SetFile(path); err != nil {
			return nil, err
		}
		return c, nil
	}
	return config.Load(path)
}

// pathForConfig stores a path relative to the config file when it lives
// below it, so a directory with config and images can be moved as a whole.
func pathForConfig(cfgPath, abs string) string {
	cfgAbs, err := filepath.Abs(cfgPath)
	if err != nil {
		return abs
	}
	rel, err := filepath.Rel(filepath.Dir(cfgAbs), abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return abs
	}
	return rel
}

func isBlockDevice(path string) (bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0, nil
}

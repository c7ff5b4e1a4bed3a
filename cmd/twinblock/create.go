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
	)
	cmd := &cobra.Command{
		Use:   "create NAME --path FILE --size SIZE",
		Short: "Create a volume and add it to the config file",
		Long: `Create a volume: make its backing storage and add it to the config file
(created when missing). Sizes take binary units: 512M, 10G, 2T.

  twinblock create vol0 --path ./vol0.img --size 10G
  twinblock create vol1 --path /dev/vg0/vol1            # a raw block device keeps its size`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := config.ValidName(name); err != nil {
				return err
			}
			if bType != "file" {
				return fmt.Errorf("--backend: %q cannot be created (want file; mem volumes live only in `serve --backend mem`)", bType)
			}
			if path == "" {
				return errors.New("--path: required")
			}
			cfg, err := loadOrNewConfig(cfgPath)
			if err != nil {
				return err
			}
			if _, dup := cfg.Volume(name); dup {
				return fmt.Errorf("volume %q already exists in %s", name, cfgPath)
			}
			abs, err := filepath.Abs(path)
			if err != nil {
				return err
			}
			isDev, err := isBlockDevice(abs)
			if err != nil {
				return err
			}
			var created bool
			if isDev {
				b, err := file.Open(abs, file.Options{})
				if err != nil {
					return err
				}
				size = config.Size(b.Size())
				b.Close()
			} else {
				if size <= 0 {
					return errors.New("--size: required for a file volume (e.g. --size 10G)")
				}
				b, err := file.Create(abs, int64(size), file.Options{})
				if err != nil {
					return err
				}
				if err := b.Close(); err != nil {
					return err
				}
				created = true
			}
			cfg.Volumes = append(cfg.Volumes, config.Volume{
				Name:        name,
				Description: desc,
				Backend:     config.Backend{Type: "file", Path: pathForConfig(cfgPath, abs)},
			})
			if err := applyReplicationFlags(cmd, cfg, cfgPath, node, tlsDir, repl); err != nil {
				return err
			}
			cleanup := func() {
				if created {
					os.Remove(abs)
				}
			}
			if err := cfg.Validate(); err != nil {
				cleanup()
				return err
			}
			vc, _ := cfg.Volume(name)
			st, err := initialState(uuid, role, uint64(size), cfg.Replication != nil)
			if err != nil {
				cleanup()
				return err
			}
			if err := os.MkdirAll(cfg.JournalDir(vc), 0o755); err != nil {
				cleanup()
				return err
			}
			fs := &engine.FileState{Path: cfg.StatePath(vc)}
			if _, err := fs.Load(); err == nil {
				cleanup()
				return fmt.Errorf("volume %s: %s already exists (a volume was created here before)", name, cfg.StatePath(vc))
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
			fmt.Fprintf(out, "created volume %s: %s, %s (%d bytes); added to %s\n", name, abs, size, int64(size), cfgPath)
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
	cmd.Flags().StringVar(&bType, "backend", "file", "backend type: file")
	cmd.Flags().StringVar(&path, "path", "", "backing file or block device")
	cmd.Flags().Var(&size, "size", "volume size, e.g. 10G (file backend)")
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

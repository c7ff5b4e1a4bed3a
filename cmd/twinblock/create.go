package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine/backend/file"
)

func newCreateCmd() *cobra.Command {
	var (
		cfgPath string
		bType   string
		path    string
		size    config.Size
		desc    string
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
			if err := cfg.Validate(); err != nil {
				return err
			}
			if err := cfg.WriteFile(cfgPath); err != nil {
				if created {
					os.Remove(abs)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created volume %s: %s, %s (%d bytes); added to %s\n",
				name, abs, size, int64(size), cfgPath)
			fmt.Fprintf(cmd.OutOrStdout(), "next: twinblock serve --config %s\n", cfgPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "twinblock.yaml", "config file to add the volume to (created when missing)")
	cmd.Flags().StringVar(&bType, "backend", "file", "backend type: file")
	cmd.Flags().StringVar(&path, "path", "", "backing file or block device")
	cmd.Flags().Var(&size, "size", "volume size, e.g. 10G (file backend)")
	cmd.Flags().StringVar(&desc, "description", "", "description shown to NBD clients")
	return cmd
}

// loadOrNewConfig reads path, or returns an empty config when it does not
// exist yet (create starts the file).
func loadOrNewConfig(path string) (*config.Config, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		c := &config.Config{Listen: config.DefaultListen}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		c.SetDir(filepath.Dir(abs))
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

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/transport/pki"
)

func init() { extraCommands = append(extraCommands, newCertsCmd) }

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make the CA and node certificates of a replication pair (mutual TLS)",
		Long: `The peer link between the two nodes of a pair is mutual TLS 1.3: each node
presents a certificate signed by the pair's CA, and each side checks that the
other's certificate names the peer node id from the config.

Demo, everything in one directory:
  twinblock certs pair --out ./certs --nodes a,b
    -> ca.pem ca-key.pem a.pem a-key.pem b.pem b-key.pem

Real deployment (keep ca-key.pem offline; copy ca.pem and each node's pair):
  twinblock certs ca   --out ./ca
  twinblock certs node --ca ./ca --node a --host 10.0.1.5 --host node-a.dc1 --out ./a
  twinblock certs node --ca ./ca --node b --host 10.0.2.5 --out ./b

Keys are ECDSA P-256 and written with mode 0600. Existing files are kept
unless --force is given.`,
	}
	cmd.AddCommand(newCertsCACmd(), newCertsNodeCmd(), newCertsPairCmd())
	return cmd
}

type certsCommon struct {
	out   string
	days  int
	force bool
}

func (c *certsCommon) flags(cmd *cobra.Command, defDays int) {
	cmd.Flags().StringVar(&c.out, "out", "", "output directory (created if missing)")
	cmd.Flags().IntVar(&c.days, "days", defDays, "validity in days")
	cmd.Flags().BoolVar(&c.force, "force", false, "overwrite existing files")
	_ = cmd.MarkFlagRequired("out")
}

func (c *certsCommon) validity() (pki.Options, error) {
	if c.days <= 0 {
		return pki.Options{}, fmt.Errorf("--days: %d: want a positive number", c.days)
	}
	nb := time.Now().Add(-time.Hour)
	return pki.Options{NotBefore: nb, NotAfter: nb.Add(time.Duration(c.days) * 24 * time.Hour)}, nil
}

func printWritten(w io.Writer, dir, name string, withKey bool) {
	cert, key := pki.Paths(dir, name)
	fmt.Fprintf(w, "wrote %s\n", cert)
	if withKey {
		fmt.Fprintf(w, "wrote %s (mode 0600)\n", key)
	}
}

func newCertsCACmd() *cobra.Command {
	var c certsCommon
	var name string
	cmd := &cobra.Command{
		Use:   "ca --out DIR",
		Short: "Make a pair CA: DIR/ca.pem and DIR/ca-key.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.validity()
			if err != nil {
				return err
			}
			ca, err := pki.GenerateCAWith(name, o)
			if err != nil {
				return err
			}
			if err := pki.Write(c.out, "ca", ca, c.force); err != nil {
				return err
			}
			printWritten(cmd.OutOrStdout(), c.out, "ca", true)
			return nil
		},
	}
	c.flags(cmd, int(pki.DefaultCAValidity/(24*time.Hour)))
	cmd.Flags().StringVar(&name, "name", "twinblock pair CA", "CA common name")
	return cmd
}

func newCertsNodeCmd() *cobra.Command {
	var c certsCommon
	var caDir, node string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "node --ca DIR --node ID [--host HOST]... --out DIR",
		Short: "Make a node certificate signed by the pair CA: DIR/ID.pem, DIR/ID-key.pem, DIR/ca.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.validity()
			if err != nil {
				return err
			}
			caCert, caKey := pki.Paths(caDir, "ca")
			ca, err := pki.LoadCert(caCert, caKey)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			n, err := pki.GenerateNodeWith(ca, node, hosts, o)
			if err != nil {
				return err
			}
			if err := pki.Write(c.out, node, n, c.force); err != nil {
				return err
			}
			printWritten(cmd.OutOrStdout(), c.out, node, true)
			// The node also needs the CA certificate (not its key).
			if abs1, _ := filepath.Abs(c.out); abs1 != mustAbs(caDir) {
				if err := pki.Write(c.out, "ca", &pki.Cert{Cert: ca.Cert}, c.force); err != nil {
					return err
				}
				printWritten(cmd.OutOrStdout(), c.out, "ca", false)
			}
			return nil
		},
	}
	c.flags(cmd, int(pki.DefaultNodeValidity/(24*time.Hour)))
	cmd.Flags().StringVar(&caDir, "ca", "", "directory holding ca.pem and ca-key.pem")
	cmd.Flags().StringVar(&node, "node", "", "node id (as in the config's peer settings)")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "extra DNS name or IP SAN (repeatable); localhost, 127.0.0.1 and ::1 are always included")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func newCertsPairCmd() *cobra.Command {
	var c certsCommon
	var nodes string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "pair --out DIR --nodes a,b [--host HOST | --host ID=HOST]...",
		Short: "Make a CA and both node certificates in one directory (demo, tests)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.validity()
			if err != nil {
				return err
			}
			ids := strings.Split(nodes, ",")
			for i := range ids {
				ids[i] = strings.TrimSpace(ids[i])
			}
			if len(ids) != 2 || ids[0] == "" || ids[1] == "" || ids[0] == ids[1] {
				return fmt.Errorf("--nodes: %q: want two different node ids, e.g. a,b", nodes)
			}
			per := map[string][]string{}
			for _, h := range hosts {
				if id, host, ok := strings.Cut(h, "="); ok {
					if id != ids[0] && id != ids[1] {
						return fmt.Errorf("--host %s: %q is not one of --nodes", h, id)
					}
					per[id] = append(per[id], host)
					continue
				}
				per[ids[0]] = append(per[ids[0]], h)
				per[ids[1]] = append(per[ids[1]], h)
			}
			if !c.force {
				for _, name := range append([]string{"ca"}, ids...) {
					for _, p := range pathsOf(c.out, name) {
						if _, err := os.Stat(p); err == nil {
							return fmt.Errorf("%s exists (use --force to overwrite)", p)
						}
					}
				}
			}
			caOpts := o
			caOpts.NotAfter = o.NotBefore.Add(max(pki.DefaultCAValidity, o.NotAfter.Sub(o.NotBefore)))
			ca, err := pki.GenerateCAWith("twinblock pair CA "+ids[0]+"+"+ids[1], caOpts)
			if err != nil {
				return err
			}
			if err := pki.Write(c.out, "ca", ca, c.force); err != nil {
				return err
			}
			printWritten(cmd.OutOrStdout(), c.out, "ca", true)
			for _, id := range ids {
				n, err := pki.GenerateNodeWith(ca, id, per[id], o)
				if err != nil {
					return err
				}
				if err := pki.Write(c.out, id, n, c.force); err != nil {
					return err
				}
				printWritten(cmd.OutOrStdout(), c.out, id, true)
			}
			return nil
		},
	}
	c.flags(cmd, int(pki.DefaultNodeValidity/(24*time.Hour)))
	cmd.Flags().StringVar(&nodes, "nodes", "a,b", "the two node ids, comma-separated")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "extra SAN for both nodes, or ID=HOST for one (repeatable)")
	return cmd
}

func pathsOf(dir, name string) []string {
	c, k := pki.Paths(dir, name)
	return []string{c, k}
}

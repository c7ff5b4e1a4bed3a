package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine"
)

func init() {
	extraCommands = append(extraCommands,
		newStatusCmd,
		func() *cobra.Command { return newAdminOpCmd(opPromote) },
		func() *cobra.Command { return newAdminOpCmd(opDemote) },
		func() *cobra.Command { return newAdminOpCmd(opConnect) },
		func() *cobra.Command { return newAdminOpCmd(opDisconnect) },
	)
}

const (
	// adminStatusTimeout bounds a status query: the daemon answers it from
	// memory, so a long wait means it is stuck.
	adminStatusTimeout = 10 * time.Second
	// adminOpTimeout bounds promote, connect and disconnect.
	adminOpTimeout = 30 * time.Second
)

// adminTarget holds the flags that say which daemon to talk to.
type adminTarget struct {
	socket  string
	cfgPath string
}

func (a *adminTarget) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.socket, "admin", "", "the daemon's admin socket (default: admin_socket of --config)")
	cmd.Flags().StringVarP(&a.cfgPath, "config", "c", "twinblock.yaml", "config file of the daemon, to find its admin socket")
}

// client returns a client for the daemon's socket: --admin if given,
// else the admin socket the config file names.
func (a *adminTarget) client(cmd *cobra.Command) (*adminClient, error) {
	if a.socket != "" {
		if cmd.Flags().Changed("config") {
			return nil, errors.New("--admin and --config: use one or the other")
		}
		return newAdminClient(a.socket), nil
	}
	cfg, err := config.Load(a.cfgPath)
	if err != nil {
		return nil, fmt.Errorf("finding the admin socket (or give --admin PATH): %w", err)
	}
	return newAdminClient(cfg.AdminSocketPath()), nil
}

func newStatusCmd() *cobra.Command {
	var t adminTarget
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [VOLUME]",
		Short: "Show role, disk and link state of the daemon's volumes",
		Long: `Ask the running daemon for the state of its volumes (all, or one):

  twinblock status
  twinblock status vol0 --json

Columns: ROLE primary/secondary; DISK how far this copy can be trusted
(UpToDate, Outdated, Inconsistent); CONN the peer link (Connected, CatchingUp,
Connecting, StandAlone, NeedsResync, SplitBrain, Refused); PEER-DISK the
peer's copy; LAG records/bytes the peer does not hold yet; IN-FLIGHT writes
admitted and not answered. --json prints an array of every field.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := t.client(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), adminStatusTimeout)
			defer cancel()
			var sts []engine.Status
			if len(args) == 1 {
				st, err := c.volume(ctx, args[0])
				if err != nil {
					return cliAdminError("status", args[0], false, err)
				}
				sts = []engine.Status{st}
			} else {
				sts, err = c.status(ctx)
				if err != nil {
					return cliAdminError("status", "", false, err)
				}
			}
			if asJSON {
				// Always an array, so scripts parse one shape.
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(sts)
			}
			return writeStatusTable(cmd.OutOrStdout(), sts)
		},
	}
	t.flags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (an array of volume states)")
	return cmd
}

// adminOp describes one of the role/link commands.
type adminOp struct {
	name, short, long string
	timeout           time.Duration
	force             bool // takes --force
}

var (
	opPromote = adminOp{
		name:  "promote",
		short: "Make this node's copy of a volume the primary",
		long: `Make this node primary for VOLUME: it starts accepting writes from NBD clients.

Refused while the peer is primary, and when the local copy is not up to date
(it may miss acknowledged writes). --force promotes an outdated copy anyway:
writes the old primary acknowledged after this copy fell behind are lost.`,
		timeout: adminOpTimeout,
		force:   true,
	}
	opDemote = adminOp{
		name:  "demote",
		short: "Make this node's copy of a volume secondary",
		long: `Make this node secondary for VOLUME: new writes are refused, writes in flight
are answered first (the daemon waits up to 60 s for them).`,
		timeout: adminDemoteTimeout + 15*time.Second,
	}
	opConnect = adminOp{
		name:    "connect",
		short:   "Re-enable the peer link of a volume",
		long:    `Re-enable the peer link of VOLUME after disconnect: the node reconnects and catches up.`,
		timeout: adminOpTimeout,
	}
	opDisconnect = adminOp{
		name:  "disconnect",
		short: "Drop the peer link of a volume and keep it down",
		long: `Drop the peer link of VOLUME; it stays StandAlone until connect. A primary
keeps serving and keeps journal records for the peer to catch up later.`,
		timeout: adminOpTimeout,
	}
)

func newAdminOpCmd(op adminOp) *cobra.Command {
	var t adminTarget
	var force bool
	cmd := &cobra.Command{
		Use:   op.name + " VOLUME",
		Short: op.short,
		Long:  op.long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := t.client(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), op.timeout)
			defer cancel()
			st, err := c.op(ctx, args[0], op.name, force)
			if err != nil {
				return cliAdminError(op.name, args[0], force, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), statusLine(st))
			return nil
		},
	}
	t.flags(cmd)
	if op.force {
		cmd.Flags().BoolVar(&force, "force", false, "promote even if the local copy is not up to date (may lose acknowledged writes)")
	}
	return cmd
}

// cliAdminError prefixes err with the command and volume and adds a hint
// where the user has an obvious next step.
func cliAdminError(op, vol string, force bool, err error) error {
	if errors.Is(err, errNoDaemon) || errors.Is(err, errAdminDenied) {
		return err // about the daemon, not the volume
	}
	hint := ""
	switch {
	case op == "promote" && !force && errors.Is(err, engine.ErrNotUpToDate):
		hint = " (use --force to promote anyway)"
	case op == "promote" && errors.Is(err, engine.ErrPeerPrimary):
		hint = " (demote the peer first)"
	case op == "demote" && errors.Is(err, context.DeadlineExceeded):
		hint = " (writes in flight did not finish; the volume is still primary)"
	}
	if vol == "" {
		return fmt.Errorf("%s: %w%s", op, err, hint)
	}
	return fmt.Errorf("%s %s: %w%s", op, vol, err, hint)
}

// statusLine is the one-line result of a role or link change.
func statusLine(st engine.Status) string {
	s := fmt.Sprintf("%s: role %s, disk %s, connection %s", st.Name, st.Role, st.Disk, st.Conn)
	if st.PeerDisk != "" && st.PeerDisk != engine.DiskUnknown {
		s += ", peer disk " + string(st.PeerDisk)
	}
	return s
}

// writeStatusTable prints the volumes as a table, then one line per
// volume that has a link error or has failed (too long for a column).
func writeStatusTable(w io.Writer, sts []engine.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tROLE\tDISK\tCONN\tPEER\tPEER-DISK\tMODE\tLAG\tIN-FLIGHT")
	for _, st := range sts {
		lag := "-"
		if st.Peer != "" {
			lag = strconv.FormatUint(st.LagRecords, 10) + "/" + humanBytes(st.LagBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n",
			st.Name, st.Role, st.Disk, st.Conn, dash(st.Peer), dash(string(st.PeerDisk)), dash(st.Mode), lag, st.InFlight)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, st := range sts {
		if st.Failed != "" {
			fmt.Fprintf(w, "%s: FAILED: %s\n", st.Name, st.Failed)
		}
		if st.ConnError != "" {
			fmt.Fprintf(w, "%s: connection error: %s\n", st.Name, st.ConnError)
		}
		for _, p := range []*engine.Progress{st.Resync, st.Verify} {
			if p != nil && p.Running {
				fmt.Fprintf(w, "%s: %s\n", st.Name, progressLine(p))
			}
		}
		if st.ResyncPendingBytes > 0 && (st.Resync == nil || !st.Resync.Running) {
			fmt.Fprintf(w, "%s: the peer needs a block resync of %s (starts when it connects)\n", st.Name, humanBytes(int64(st.ResyncPendingBytes)))
		}
	}
	return nil
}

// progressLine describes a running resync or verify.
func progressLine(p *engine.Progress) string {
	pct := 0.0
	if p.TotalBytes > 0 {
		pct = 100 * float64(p.DoneBytes) / float64(p.TotalBytes)
	}
	s := fmt.Sprintf("%s %.1f%% (%s of %s), sent %s, %s/s, %s left", p.Kind, pct,
		humanBytes(int64(p.DoneBytes)), humanBytes(int64(p.TotalBytes)), humanBytes(int64(p.SentBytes)),
		humanBytes(int64(p.RateBps)), (time.Duration(p.ETASeconds) * time.Second).String())
	if p.Kind == "verify" && len(p.Mismatches) > 0 {
		s += fmt.Sprintf(", %d range(s) differ so far", len(p.Mismatches))
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes formats n with binary units and one decimal: 0B, 512B, 1.5KiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= 1024
		if f < 1024 || u == "PiB" {
			return strconv.FormatFloat(f, 'f', 1, 64) + u
		}
	}
	panic("unreachable")
}

// adminClient talks to a daemon's admin socket.
type adminClient struct {
	path string
	hc   *http.Client
}

func newAdminClient(path string) *adminClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			switch {
			case err == nil:
				return c, nil
			case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
				return nil, fmt.Errorf("%w at %s: is `twinblock serve` running?", errNoDaemon, path)
			case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
				return nil, fmt.Errorf("%w on %s (run as the daemon's user or root)", errAdminDenied, path)
			}
			return nil, fmt.Errorf("admin socket %s: %w", path, err)
		},
		// One request per CLI run: nothing to keep alive.
		DisableKeepAlives: true,
	}
	return &adminClient{path: path, hc: &http.Client{Transport: tr}}
}

func (c *adminClient) status(ctx context.Context) ([]engine.Status, error) {
	var sts []engine.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &sts)
	return sts, err
}

func (c *adminClient) volume(ctx context.Context, name string) (engine.Status, error) {
	var st engine.Status
	err := c.do(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(name), &st)
	return st, err
}

func (c *adminClient) op(ctx context.Context, name, op string, force bool) (engine.Status, error) {
	p := "/v1/volumes/" + url.PathEscape(name) + "/" + op
	if op == "promote" {
		p += "?force=" + strconv.FormatBool(force)
	}
	var st engine.Status
	err := c.do(ctx, http.MethodPost, p, &st)
	return st, err
}

// adminRespLimit caps what the client reads from the daemon.
const adminRespLimit = 16 << 20

func (c *adminClient) do(ctx context.Context, method, p string, out any) error {
	// The host is a placeholder: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://twinblock"+p, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // "Get http://twinblock/...": noise for the user
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer from the daemon at %s in time: %w", c.path, err)
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, adminRespLimit))
	if err != nil {
		return fmt.Errorf("admin socket %s: reading answer: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb adminErrorBody
		if json.Unmarshal(body, &eb) != nil || eb.Code == "" {
			return fmt.Errorf("admin socket %s: %s: %q", c.path, resp.Status, truncate(string(body), 200))
		}
		return &adminCallError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin socket %s: bad answer: %w", c.path, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// adminCallError is a failure the daemon reported. It unwraps to the
// sentinel of its code (engine.ErrNotUpToDate, errNotFound, ...), so
// callers use errors.Is as they would in-process.
type adminCallError struct {
	Status  int    // HTTP status
	Code    string // wire code, see adminCodes
	Message string // the daemon's error text
}

func (e *adminCallError) Error() string {
	// The package prefix of the sentinel helps in the daemon's log; on the
	// command line the user wants what went wrong. Only the sentinel's own
	// text is shortened; the rest of the message is kept as the daemon
	// wrote it.
	s := e.Unwrap()
	if s == nil {
		return e.Message
	}
	full := s.Error()
	return strings.Replace(e.Message, full, strings.TrimPrefix(full, "engine: "), 1)
}

func (e *adminCallError) Unwrap() error {
	for _, c := range adminCodes {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}

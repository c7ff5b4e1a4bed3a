package main

// `twinblock resync` and `twinblock verify`: start a block resync or an
// online verify on the daemon, then follow it (a progress bar on a
// terminal) until it ends.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine"
)

func init() {
	extraCommands = append(extraCommands, newResyncCmd, newVerifyCmd)
}

// ---------------------------------------------------------------- daemon side

// scanVolume is what resync and verify need of a volume (engine.Volume).
type scanVolume interface {
	adminVolume
	Role() engine.Role
	Resync() error
	Verify(repair bool) error
	SetResyncRate(bps int64)
	Progress(kind string) (engine.Progress, bool)
}

func (s *adminServer) scanVolume(name string) (scanVolume, error) {
	v, err := s.volume(name)
	if err != nil {
		return nil, err
	}
	sv, ok := v.(scanVolume)
	if !ok {
		return nil, adminReqErr(errBadRequest, "volume %s cannot resync or verify", name)
	}
	return sv, nil
}

// scanRequest checks the method, finds the volume, parses the allowed
// parameters and applies a rate; false means the error was answered.
func (s *adminServer) scanRequest(w http.ResponseWriter, r *http.Request, allowed ...string) (scanVolume, scanParams, bool) {
	if !allowMethod(w, r, http.MethodPost) {
		return nil, scanParams{}, false
	}
	v, err := s.scanVolume(r.PathValue("name"))
	if err == nil {
		var q scanParams
		if q, err = scanQuery(r, allowed...); err == nil {
			if q.rate >= 0 {
				v.SetResyncRate(q.rate)
			}
			return v, q, true
		}
	}
	writeAdminError(w, err)
	return nil, scanParams{}, false
}

// handleResync: POST /v1/volumes/{name}/resync[?rate=BYTES]. With a resync
// already running and a rate, only the rate changes.
func (s *adminServer) handleResync(w http.ResponseWriter, r *http.Request) {
	v, q, ok := s.scanRequest(w, r, "rate")
	if !ok {
		return
	}
	log := s.log.With("via", "admin socket", "op", "resync", "volume", v.Name(), "rate", q.rate)
	if p, ok := v.Progress("resync"); ok && p.Running && v.Role() == engine.RolePrimary {
		log.Info("admin request: resync already running", "id", p.ID)
		writeJSON(w, http.StatusOK, v.Status())
		return
	}
	log.Info("admin request", "role", v.Role())
	if err := v.Resync(); err != nil {
		log.Info("admin request failed", "err", err)
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v.Status())
}

// handleVerify: POST /v1/volumes/{name}/verify[?repair=true][&rate=BYTES].
func (s *adminServer) handleVerify(w http.ResponseWriter, r *http.Request) {
	v, q, ok := s.scanRequest(w, r, "rate", "repair")
	if !ok {
		return
	}
	s.log.Info("admin request", "via", "admin socket", "op", "verify", "volume", v.Name(), "repair", q.repair, "rate", q.rate)
	if err := v.Verify(q.repair); err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v.Status())
}

type scanParams struct {
	rate   int64 // -1: not given
	repair bool
}

// scanQuery parses the allowed parameters and refuses any other.
func scanQuery(r *http.Request, allowed ...string) (scanParams, error) {
	p := scanParams{rate: -1}
	for k, vs := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok || len(vs) != 1 {
			return p, adminReqErr(errBadRequest, "unexpected parameter %q", k)
		}
		switch k {
		case "rate":
			n, err := strconv.ParseInt(vs[0], 10, 64)
			if err != nil || n < 0 {
				return p, adminReqErr(errBadRequest, "rate=%q: want bytes per second (0: unlimited)", vs[0])
			}
			p.rate = n
		case "repair":
			b, err := strconv.ParseBool(vs[0])
			if err != nil {
				return p, adminReqErr(errBadRequest, "repair=%q: want true or false", vs[0])
			}
			p.repair = b
		}
	}
	return p, nil
}

// ---------------------------------------------------------------- CLI

func (c *adminClient) post(ctx context.Context, name, op string, q url.Values) (engine.Status, error) {
	p := "/v1/volumes/" + url.PathEscape(name) + "/" + op
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var st engine.Status
	err := c.do(ctx, http.MethodPost, p, &st)
	return st, err
}

func newResyncCmd() *cobra.Command {
	var (
		t       adminTarget
		rate    config.Size
		detach  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "resync VOLUME",
		Short: "Resync the peer's copy block by block (only differing blocks travel)",
		Long: `Run a full checksummed resync of VOLUME: both nodes hash their copy chunk by
chunk, and only the 4 KiB blocks that differ are sent, while the volume keeps
serving and replicating writes.

On the primary: compare everything with the peer now (or when it connects).
On a secondary: declare the local copy Inconsistent and let the primary
overwrite whatever differs. This is how a split brain is resolved: run it on
the node whose writes since the split are to be discarded.

A resync already running only has its rate changed by --rate. Resyncs after
an outage longer than the journal keeps, and of a secondary created over
existing data, start by themselves; this command then just follows them.`,
		Example: `  twinblock resync vol0
  twinblock resync vol0 --rate 100M      # at most 100 MiB/s compared
  twinblock resync vol0 --detach         # start it and return`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := t.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if cmd.Flags().Changed("rate") {
				q.Set("rate", strconv.FormatInt(int64(rate), 10))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), adminOpTimeout)
			before, _ := c.volume(ctx, args[0])
			st, err := c.post(ctx, args[0], "resync", q)
			cancel()
			if err != nil {
				return cliAdminError("resync", args[0], false, err)
			}
			out := cmd.OutOrStdout()
			if detach {
				fmt.Fprintln(out, statusLine(st))
				return nil
			}
			wctx := cmd.Context()
			if timeout > 0 {
				var c2 context.CancelFunc
				wctx, c2 = context.WithTimeout(wctx, timeout)
				defer c2()
			}
			var oldID uint64
			if before.Resync != nil && st.Role == engine.RolePrimary && !before.Resync.Running {
				oldID = before.Resync.ID
			}
			final, err := follow(wctx, c, args[0], out, func(st engine.Status) (*engine.Progress, bool) {
				if st.Role == engine.RolePrimary {
					p := st.Resync
					if p == nil || p.ID <= oldID {
						return nil, false
					}
					return p, !p.Running && st.ResyncPendingBytes == 0 && st.Conn == engine.ConnConnected
				}
				return st.Resync, st.Disk == engine.DiskUpToDate && st.Conn == engine.ConnConnected
			})
			if err != nil {
				return fmt.Errorf("resync %s: %w", args[0], err)
			}
			fmt.Fprintln(out, statusLine(final))
			if p := final.Resync; p != nil {
				fmt.Fprintf(out, "compared %s, sent %s in %.1fs\n", humanBytes(int64(p.DoneBytes)), humanBytes(int64(p.SentBytes)), p.Elapsed)
			}
			return nil
		},
	}
	t.flags(cmd)
	cmd.Flags().Var(&rate, "rate", "limit the bytes compared per second, e.g. 100M (0: unlimited); also changes a running resync")
	cmd.Flags().BoolVar(&detach, "detach", false, "start the resync and return without following it")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "stop following after this long (the resync goes on)")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var (
		t       adminTarget
		repair  bool
		asJSON  bool
		rate    config.Size
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify VOLUME",
		Short: "Compare both copies online and report the ranges that differ",
		Long: `Compare the primary's and the secondary's copy of VOLUME chunk by chunk
(xxhash64) while the volume is in use, and report the byte ranges that
differ (4 KiB granularity). Both sides hash each range at the same point of
the write stream, so writes in flight never show as differences.

Nothing changes unless --repair is given; then the differing blocks are
sent from the primary to the secondary. Run it on the primary; the peer
link must be Connected. Exit status 1 when differences were found and not
repaired.`,
		Example: `  twinblock verify vol0
  twinblock verify vol0 --json
  twinblock verify vol0 --repair`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := t.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if repair {
				q.Set("repair", "true")
			}
			if cmd.Flags().Changed("rate") {
				q.Set("rate", strconv.FormatInt(int64(rate), 10))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), adminOpTimeout)
			before, _ := c.volume(ctx, args[0])
			_, err = c.post(ctx, args[0], "verify", q)
			cancel()
			if err != nil {
				return cliAdminError("verify", args[0], false, err)
			}
			var oldID uint64
			if before.Verify != nil {
				oldID = before.Verify.ID
			}
			wctx := cmd.Context()
			if timeout > 0 {
				var c2 context.CancelFunc
				wctx, c2 = context.WithTimeout(wctx, timeout)
				defer c2()
			}
			out := cmd.OutOrStdout()
			progOut := out
			if asJSON {
				progOut = io.Discard
			}
			final, err := follow(wctx, c, args[0], progOut, func(st engine.Status) (*engine.Progress, bool) {
				p := st.Verify
				if p == nil || p.ID <= oldID {
					return nil, false
				}
				return p, !p.Running
			})
			if err != nil {
				return fmt.Errorf("verify %s: %w", args[0], err)
			}
			p := final.Verify
			if asJSON {
				b, _ := json.MarshalIndent(p, "", "  ")
				fmt.Fprintln(out, string(b))
			} else {
				writeVerifyReport(out, args[0], p)
			}
			if p.Error != "" {
				return fmt.Errorf("verify %s: %s", args[0], p.Error)
			}
			if len(p.Mismatches) > 0 && !p.Repair {
				return &exitError{code: 1, msg: ""}
			}
			return nil
		},
	}
	t.flags(cmd)
	cmd.Flags().BoolVar(&repair, "repair", false, "send the differing blocks from the primary to the secondary")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().Var(&rate, "rate", "limit the bytes compared per second, e.g. 100M (0: unlimited)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "stop following after this long (the verify goes on)")
	return cmd
}

func writeVerifyReport(w io.Writer, vol string, p *engine.Progress) {
	fmt.Fprintf(w, "verify %s: compared %s in %.1fs, %d range(s) differ (%s)",
		vol, humanBytes(int64(p.DoneBytes)), p.Elapsed, len(p.Mismatches), humanBytes(int64(p.MismatchBytes)))
	if p.Repair {
		fmt.Fprintf(w, ", repaired %s", humanBytes(int64(p.RepairedBytes)))
	}
	fmt.Fprintln(w)
	if len(p.Mismatches) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "OFFSET\tLENGTH\tOFFSET (HEX)\t")
	for _, r := range p.Mismatches {
		fmt.Fprintf(tw, "%d\t%d\t%#x\t\n", r.Offset, r.Length, r.Offset)
	}
	tw.Flush()
}

// follow polls the volume's status until done says so, drawing a progress
// bar on a terminal (a line every 10 s otherwise).
func follow(ctx context.Context, c *adminClient, name string, out io.Writer,
	done func(engine.Status) (*engine.Progress, bool)) (engine.Status, error) {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	var bar *progressbar.ProgressBar
	lastLine := time.Now() // first line after 10 s: short passes print only their result
	defer func() {
		if bar != nil {
			bar.Finish()
			fmt.Fprintln(out)
		}
	}()
	for {
		qctx, cancel := context.WithTimeout(ctx, adminStatusTimeout)
		st, err := c.volume(qctx, name)
		cancel()
		if err != nil {
			return st, err
		}
		p, fin := done(st)
		if p != nil && p.TotalBytes > 0 {
			switch {
			case tty:
				if bar == nil {
					bar = progressbar.NewOptions64(int64(p.TotalBytes),
						progressbar.OptionSetWriter(out),
						progressbar.OptionSetDescription(p.Kind+" "+name),
						progressbar.OptionShowBytes(true),
						progressbar.OptionSetWidth(30),
						progressbar.OptionThrottle(200*time.Millisecond),
						progressbar.OptionShowCount(),
						progressbar.OptionSetPredictTime(true),
						progressbar.OptionUseIECUnits(true))
				}
				bar.ChangeMax64(int64(p.TotalBytes))
				_ = bar.Set64(int64(p.DoneBytes))
			case out != io.Discard && time.Since(lastLine) >= 10*time.Second:
				lastLine = time.Now()
				fmt.Fprintf(out, "%s: %s\n", name, progressLine(p))
			}
		} else if p == nil && out != io.Discard && time.Since(lastLine) >= 10*time.Second {
			lastLine = time.Now()
			fmt.Fprintf(out, "%s: waiting for the pass to start (connection %s)\n", name, st.Conn)
		}
		if fin {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("stopped following (it goes on in the daemon): %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// exitError makes the command exit with code after printing msg (if any).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

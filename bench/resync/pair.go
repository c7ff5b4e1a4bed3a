package resync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
	"github.com/twinblock/twinblock/bench/proxy"
)

// exportName is the volume both nodes serve.
const exportName = "vol0"

// commandTimeout bounds twinblock create, certs and status: none of them
// does more than a few small file writes or one admin-socket round trip.
const commandTimeout = 30 * time.Second

// stopGrace is how long a daemon may take to exit after SIGTERM.
const stopGrace = 30 * time.Second

// node is one side of the pair: its directory (image, journal, config,
// admin socket) and, while it runs, its daemon.
type node struct {
	name string // "a" (primary) or "b" (secondary)
	dir  string
	img  string
	cfg  string
	repl string // peer-link listen address
	proc *bench.Process
	argv []string
}

// pair is the two nodes and the counting proxy between them.
type pair struct {
	bin, certs   string
	startTimeout time.Duration
	a, b         *node
	px           *proxy.Proxy
}

func newPair(dir, bin, certs string, startTimeout time.Duration) (*pair, error) {
	p := &pair{bin: bin, certs: certs, startTimeout: startTimeout}
	for _, name := range []string{"a", "b"} {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		n := &node{name: name, dir: d, img: filepath.Join(d, exportName+".img"), cfg: filepath.Join(d, "twinblock.yaml")}
		if name == "a" {
			p.a = n
		} else {
			p.b = n
		}
	}
	return p, nil
}

var uuidLine = regexp.MustCompile(`(?m)^uuid ([0-9a-f]{32}), role (primary|secondary)$`)

// create makes both volumes anew over the existing images (their journals
// and configs from an earlier round removed), with a's peer address a new
// counting proxy in front of b.
func (p *pair) create(ctx context.Context) error {
	if p.px != nil {
		_ = p.px.Close()
		p.px = nil
	}
	for _, n := range []*node{p.a, p.b} {
		for _, f := range []string{n.cfg, n.img + ".journal", filepath.Join(n.dir, "twinblock.sock")} {
			if err := os.RemoveAll(f); err != nil {
				return err
			}
		}
		var err error
		if n.repl, err = bench.FreeTCPAddr(); err != nil {
			return err
		}
	}
	px, err := proxy.Start(proxy.Options{Listen: "127.0.0.1:0", Target: p.b.repl})
	if err != nil {
		return fmt.Errorf("%w: proxy: %w", ErrStart, err)
	}
	p.px = px
	create := func(n *node, peer, peerAddr string, extra ...string) (string, error) {
		argv := append([]string{p.bin, "create", exportName, "--config", n.cfg, "--path", n.img, "--existing",
			"--node", n.name, "--replication-listen", n.repl, "--peer", peer, "--peer-address", peerAddr,
			"--tls-dir", p.certs}, extra...)
		out, err := runCommand(ctx, commandTimeout, argv...)
		if err != nil {
			return "", err
		}
		m := uuidLine.FindStringSubmatch(string(out))
		if m == nil {
			return "", fmt.Errorf("%w: %s: no uuid line in %q", ErrCommand, quoteArgs(argv), out)
		}
		return m[1], nil
	}
	uuid, err := create(p.a, "b", px.Addr())
	if err != nil {
		return err
	}
	_, err = create(p.b, "a", p.a.repl, "--uuid", uuid)
	return err
}

// start launches n's daemon (NBD on a unix socket only: nothing but the
// peer link and the admin socket is used) and waits until its status
// answers.
func (p *pair) start(ctx context.Context, n *node) error {
	sock := filepath.Join(n.dir, "nbd.sock")
	_ = os.Remove(sock) // a stale socket file would make serve fail to bind
	n.argv = []string{p.bin, "serve", "--config", n.cfg, "--listen", "none", "--socket", sock, "--log-level", "warn"}
	proc, err := bench.StartProcess("node "+n.name, n.argv)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStart, quoteArgs(n.argv), err)
	}
	n.proc = proc
	return p.poll(ctx, "node "+n.name+" status", p.startTimeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := p.status(ctx, n)
		return err == nil, err
	})
}

// stop ends the daemons, primary first (SIGTERM; SIGKILL after a grace).
func (p *pair) stop() error {
	var errs []error
	for _, n := range []*node{p.a, p.b} {
		if n.proc != nil && n.proc.Stop(stopGrace) {
			errs = append(errs, fmt.Errorf("%w: node %s did not exit within %s of SIGTERM; killed", ErrStart, n.name, stopGrace))
		}
		n.proc = nil
	}
	return errors.Join(errs...)
}

// close stops everything, the proxy too.
func (p *pair) close() error {
	err := p.stop()
	if p.px != nil {
		_ = p.px.Close()
		p.px = nil
	}
	return err
}

// status runs `twinblock status --config CFG --json` and returns vol0's.
func (p *pair) status(ctx context.Context, n *node) (VolumeStatus, error) {
	out, err := runCommand(ctx, 10*time.Second, p.bin, "status", "--config", n.cfg, "--json")
	if err != nil {
		return VolumeStatus{}, err
	}
	vs, err := ParseStatus(out)
	if err != nil {
		return VolumeStatus{}, err
	}
	return findVolume(vs, exportName)
}

// poll calls try every interval until it reports done, a daemon exits,
// timeout passes or ctx ends.
func (p *pair) poll(ctx context.Context, what string, timeout, interval time.Duration, try func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		for _, n := range []*node{p.a, p.b} {
			if n.proc != nil && n.proc.Exited() {
				return fmt.Errorf("%w: node %s exited (%v) while waiting for %s: %s", ErrStart, n.name, n.proc.Err(), what, bench.OneLine(n.proc.Output.String()))
			}
		}
		done, err := try(ctx)
		if done {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			out := ""
			for _, n := range []*node{p.a, p.b} {
				if n.proc != nil {
					out += fmt.Sprintf("; node %s output: %s", n.name, bench.OneLine(n.proc.Output.String()))
				}
			}
			return fmt.Errorf("%w: %s: not done after %s (%v; last: %v)%s", ErrStart, what, timeout, ctx.Err(), last, out)
		case <-tick.C:
		}
	}
}

// cpuSeconds is the CPU time (user + system) n's daemon has used so far,
// from /proc/PID/stat; -1 when unknown.
func (n *node) cpuSeconds() float64 {
	if n.proc == nil || n.proc.Cmd.Process == nil {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.proc.Cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return parseProcStatCPU(string(b))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// parseProcStatCPU returns utime + stime of a /proc/PID/stat line in
// seconds, -1 when it cannot be read. The command name (field 2) is in
// parentheses and may hold spaces, so fields are counted after the last ')'.
func parseProcStatCPU(line string) float64 {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(line[i+1:])
	// After the name: state (3), ppid (4), ... utime (14), stime (15).
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return float64(ut+st) / clockTicks
}

// runCommand runs a short command under timeout and returns its stdout.
func runCommand(ctx context.Context, timeout time.Duration, argv ...string) ([]byte, error) {
	return benchutil.Command{Argv: argv, Timeout: timeout, Err: ErrCommand, Quote: quoteArgs}.Output(ctx)
}

// showArgs renders a daemon's command line for the report: the binary as
// "twinblock" and the work directory as WORK.
func (p *pair) showArgs(argv []string) string {
	work := filepath.Dir(p.a.dir)
	out := make([]string, len(argv))
	for i, a := range argv {
		if i == 0 && a == p.bin {
			a = "twinblock"
		}
		out[i] = strings.ReplaceAll(a, work, "WORK")
	}
	return quoteArgs(out)
}

// quoteArgs renders argv for a shell.
func quoteArgs(argv []string) string { return benchutil.QuoteArgs(argv, " \t'\"\\$&;|<>()*?") }

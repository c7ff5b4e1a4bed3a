package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine"
)

// fakeVolume is an adminVolume whose operations change its status the way
// the engine would, or fail with a preset error.
type fakeVolume struct {
	mu struct {
		sync.Mutex
		st        engine.Status
		err       error // returned (wrapped) by the next operation, then cleared
		calls     []string
		demoteCtx context.Context
	}
	// blockDemote makes Demote wait for its context to end, like a demote
	// whose writes in flight never drain.
	blockDemote  bool
	demoteActive chan struct{} // closed when a blocking Demote has started
}

func newFakeVolume(st engine.Status) *fakeVolume {
	v := &fakeVolume{demoteActive: make(chan struct{})}
	v.mu.st = st
	return v
}

func (v *fakeVolume) Name() string { return v.Status().Name }

func (v *fakeVolume) Status() engine.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.st
}

func (v *fakeVolume) setErr(err error) {
	v.mu.Lock()
	v.mu.err = err
	v.mu.Unlock()
}

func (v *fakeVolume) calls() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.mu.calls...)
}

// beginLocked records a call and returns the preset error, if any.
func (v *fakeVolume) beginLocked(call string) error {
	v.mu.calls = append(v.mu.calls, call)
	err := v.mu.err
	v.mu.err = nil
	if err != nil {
		return fmt.Errorf("%s %s: %w", call, v.mu.st.Name, err)
	}
	return nil
}

func (v *fakeVolume) Promote(force bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.beginLocked(fmt.Sprintf("promote(force=%v)", force)); err != nil {
		return err
	}
	v.mu.st.Role = engine.RolePrimary
	v.mu.st.Disk = engine.DiskUpToDate
	return nil
}

func (v *fakeVolume) Demote(ctx context.Context) error {
	v.mu.Lock()
	err := v.beginLocked("demote")
	v.mu.demoteCtx = ctx
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if v.blockDemote {
		close(v.demoteActive)
		<-ctx.Done()
		return fmt.Errorf("demote: draining: %w", ctx.Err())
	}
	v.mu.Lock()
	v.mu.st.Role = engine.RoleSecondary
	v.mu.Unlock()
	return nil
}

func (v *fakeVolume) Connect() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.beginLocked("connect"); err != nil {
		return err
	}
	v.mu.st.Conn = engine.ConnConnecting
	return nil
}

func (v *fakeVolume) Disconnect() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.beginLocked("disconnect"); err != nil {
		return err
	}
	v.mu.st.Conn = engine.ConnStandalone
	v.mu.st.PeerDisk = engine.DiskUnknown
	return nil
}

func vol0Status() engine.Status {
	return engine.Status{
		Name: "vol0", UUID: "8a1f", Size: 10 << 30, Node: "a", Role: engine.RolePrimary,
		Disk: engine.DiskUpToDate, Mode: "sync", Peer: "b", PeerAddr: "10.0.0.2:7789",
		Conn: engine.ConnCatchingUp, PeerDisk: engine.DiskOutdated, Generation: "00ff",
		LastSeq: 120, DurableSeq: 118, AppliedSeq: 100, CheckpointSeq: 90, PeerAckedSeq: 108,
		LagRecords: 12, LagBytes: 1536 << 10, InFlight: 3, RTTMicros: 420,
	}
}

func vol1Status() engine.Status {
	return engine.Status{
		Name: "scratch-1", Size: 1 << 30, Role: engine.RoleSecondary, Disk: engine.DiskOutdated,
		Peer: "a", Conn: engine.ConnConnecting, PeerDisk: engine.DiskUnknown,
		ConnError: "dial tcp 10.0.0.1:7789: connection refused",
	}
}

// shortTempDir returns a fresh directory with a short path: unix socket
// paths are limited to 108 bytes and t.TempDir embeds the test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tbadm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type adminFixture struct {
	srv  *adminServer
	sock string
	vol0 *fakeVolume
	vol1 *fakeVolume
	logs *syncBuffer
	http *http.Client
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines to log into.
type syncBuffer struct {
	mu struct {
		sync.Mutex
		b bytes.Buffer
	}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.b.String()
}

func startAdmin(t *testing.T) *adminFixture {
	t.Helper()
	f := &adminFixture{
		sock: filepath.Join(shortTempDir(t), "twinblock.sock"),
		vol0: newFakeVolume(vol0Status()),
		vol1: newFakeVolume(vol1Status()),
		logs: &syncBuffer{},
	}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := newAdminServer(f.sock, []adminVolume{f.vol0, f.vol1}, log)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	f.http = &http.Client{
		Timeout: 30 * time.Second, // a hung server fails the test instead of hanging it
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", f.sock)
			},
			DisableKeepAlives: true,
		},
	}
	return f
}

// call makes a raw HTTP request and returns the status code and body.
func (f *adminFixture) call(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://twinblock"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, body
}

// runCLI runs the twinblock command line in-process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestAdminSocketIsPrivate(t *testing.T) {
	f := startAdmin(t)
	st, err := os.Lstat(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s: mode %v, want a socket", f.sock, st.Mode())
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("socket permissions %o, want 600", perm)
	}
	// The private bind directory is gone: only the socket is left.
	ents, err := os.ReadDir(filepath.Dir(f.sock))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("socket directory holds %d entries, want only the socket: %v", len(ents), ents)
	}
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(f.sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

func TestAdminSocketStaleLiveAndNotASocket(t *testing.T) {
	dir := shortTempDir(t)
	vols := []adminVolume{newFakeVolume(vol0Status())}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A socket file left by a dead process is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	srv, err := newAdminServer(stale, vols, log)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	defer srv.Close()
	if _, err := runCLI(t, "status", "--admin", stale); err != nil {
		t.Fatalf("status after replacing a stale socket: %v", err)
	}

	// A socket a live daemon answers on is not stolen.
	if _, err := newAdminServer(stale, vols, log); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on a live socket: err = %v, want in use", err)
	}
	if _, err := runCLI(t, "status", "--admin", stale); err != nil {
		t.Fatalf("first server broken by the refused second one: %v", err)
	}

	// A regular file is never removed.
	reg := filepath.Join(dir, "file")
	if err := os.WriteFile(reg, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newAdminServer(reg, vols, log); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: err = %v, want not a socket", err)
	}
	if b, err := os.ReadFile(reg); err != nil || string(b) != "x" {
		t.Fatalf("regular file changed: %q, %v", b, err)
	}

	// Duplicate volume names are refused.
	if _, err := newAdminServer(filepath.Join(dir, "dup.sock"), []adminVolume{vols[0], vols[0]}, log); err == nil {
		t.Fatal("duplicate volume accepted")
	}
}

func TestAdminHTTPStatus(t *testing.T) {
	f := startAdmin(t)
	code, body := f.call(t, "GET", "/v1/status")
	if code != 200 {
		t.Fatalf("GET /v1/status: %d %s", code, body)
	}
	var sts []engine.Status
	if err := json.Unmarshal(body, &sts); err != nil {
		t.Fatal(err)
	}
	if want := []engine.Status{vol0Status(), vol1Status()}; !reflect.DeepEqual(sts, want) {
		t.Fatalf("status:\n got %+v\nwant %+v", sts, want)
	}

	code, body = f.call(t, "GET", "/v1/volumes/scratch-1")
	var st engine.Status
	if code != 200 || json.Unmarshal(body, &st) != nil || !reflect.DeepEqual(st, vol1Status()) {
		t.Fatalf("GET /v1/volumes/scratch-1: %d %s", code, body)
	}
}

func TestAdminHTTPOperations(t *testing.T) {
	f := startAdmin(t)
	// Each operation answers with the status after it.
	steps := []struct {
		path  string
		vol   *fakeVolume
		call  string
		check func(engine.Status) bool
	}{
		{"/v1/volumes/scratch-1/promote?force=true", f.vol1, "promote(force=true)",
			func(s engine.Status) bool { return s.Role == engine.RolePrimary && s.Disk == engine.DiskUpToDate }},
		{"/v1/volumes/vol0/demote", f.vol0, "demote",
			func(s engine.Status) bool { return s.Role == engine.RoleSecondary }},
		{"/v1/volumes/vol0/promote", f.vol0, "promote(force=false)",
			func(s engine.Status) bool { return s.Role == engine.RolePrimary }},
		{"/v1/volumes/vol0/disconnect", f.vol0, "disconnect",
			func(s engine.Status) bool { return s.Conn == engine.ConnStandalone }},
		{"/v1/volumes/vol0/connect", f.vol0, "connect",
			func(s engine.Status) bool { return s.Conn == engine.ConnConnecting }},
		{"/v1/volumes/vol0/promote?force=false", f.vol0, "promote(force=false)",
			func(s engine.Status) bool { return s.Role == engine.RolePrimary }},
	}
	for _, s := range steps {
		n := len(s.vol.calls())
		code, body := f.call(t, "POST", s.path)
		var st engine.Status
		if code != 200 || json.Unmarshal(body, &st) != nil {
			t.Fatalf("POST %s: %d %s", s.path, code, body)
		}
		if !s.check(st) || !reflect.DeepEqual(st, s.vol.Status()) {
			t.Fatalf("POST %s: answered %+v, volume is %+v", s.path, st, s.vol.Status())
		}
		if calls := s.vol.calls(); len(calls) != n+1 || calls[n] != s.call {
			t.Fatalf("POST %s: calls %v, want %s last", s.path, calls, s.call)
		}
	}

	// Demote runs with a deadline, so a drain that never ends is bounded.
	f.vol0.mu.Lock()
	ctx := f.vol0.mu.demoteCtx
	f.vol0.mu.Unlock()
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > adminDemoteTimeout {
		t.Fatalf("demote context deadline %v, %v; want one within %v", dl, ok, adminDemoteTimeout)
	}

	// Role changes are logged at Info with who asked, what and the result.
	logs := f.logs.String()
	for _, want := range []string{
		`level=INFO msg="admin request done" via="admin socket" op=promote volume=scratch-1 force=true role=primary`,
		`level=INFO msg="admin request done" via="admin socket" op=demote volume=vol0 role=secondary`,
		`level=INFO msg="admin request done" via="admin socket" op=disconnect volume=vol0 role=primary disk=UpToDate connection=StandAlone`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestAdminHTTPErrors(t *testing.T) {
	f := startAdmin(t)
	cases := []struct {
		name         string
		method, path string
		preset       error // set on vol0 before the request
		status       int
		code         string
	}{
		{"unknown volume", "GET", "/v1/volumes/nope", nil, 404, "not_found"},
		{"unknown volume op", "POST", "/v1/volumes/nope/promote", nil, 404, "not_found"},
		{"unknown op", "POST", "/v1/volumes/vol0/explode", nil, 404, "not_found"},
		{"unknown endpoint", "GET", "/v2/status", nil, 404, "not_found"},
		{"status by POST", "POST", "/v1/status", nil, 405, "method_not_allowed"},
		{"volume by DELETE", "DELETE", "/v1/volumes/vol0", nil, 405, "method_not_allowed"},
		{"promote by GET", "GET", "/v1/volumes/vol0/promote", nil, 405, "method_not_allowed"},
		{"bad force", "POST", "/v1/volumes/vol0/promote?force=maybe", nil, 400, "bad_request"},
		{"force twice", "POST", "/v1/volumes/vol0/promote?force=true&force=false", nil, 400, "bad_request"},
		{"force on demote", "POST", "/v1/volumes/vol0/demote?force=true", nil, 400, "bad_request"},
		{"misspelt param", "POST", "/v1/volumes/vol0/promote?froce=true", nil, 400, "bad_request"},
		{"not up to date", "POST", "/v1/volumes/vol0/promote", engine.ErrNotUpToDate, 409, "not_up_to_date"},
		{"peer primary", "POST", "/v1/volumes/vol0/promote?force=true", engine.ErrPeerPrimary, 409, "peer_primary"},
		{"not secondary", "POST", "/v1/volumes/vol0/promote", engine.ErrNotSecondary, 409, "not_secondary"},
		{"not primary", "POST", "/v1/volumes/vol0/demote", engine.ErrNotPrimary, 409, "not_primary"},
		{"no peer", "POST", "/v1/volumes/vol0/connect", engine.ErrNoPeer, 409, "no_peer"},
		{"closed", "POST", "/v1/volumes/vol0/disconnect", engine.ErrClosed, 503, "closed"},
		{"demote timeout", "POST", "/v1/volumes/vol0/demote", context.DeadlineExceeded, 504, "timeout"},
		{"other", "POST", "/v1/volumes/vol0/connect", errors.New("disk on fire"), 500, "internal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.vol0.Status()
			f.vol0.setErr(c.preset)
			defer f.vol0.setErr(nil)
			code, body := f.call(t, c.method, c.path)
			var eb adminErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("%d %s: %v", code, body, err)
			}
			if code != c.status || eb.Code != c.code || eb.Error == "" {
				t.Fatalf("%s %s: %d %+v, want %d code %s", c.method, c.path, code, eb, c.status, c.code)
			}
			if c.preset != nil && !strings.Contains(eb.Error, c.preset.Error()) {
				t.Fatalf("error %q does not carry %q", eb.Error, c.preset)
			}
			if after := f.vol0.Status(); !reflect.DeepEqual(after, before) {
				t.Fatalf("a failed request changed the volume: %+v", after)
			}
		})
	}
	if calls := f.vol0.calls(); len(calls) != 8 {
		t.Fatalf("volume saw %d calls, want 8 (only requests that reach the volume): %v", len(calls), calls)
	}
	if !strings.Contains(f.logs.String(), `msg="admin request failed" via="admin socket" op=promote volume=vol0 force=false err="promote(force=false) vol0: engine: local copy is not up to date"`) {
		t.Errorf("failed promote not logged:\n%s", f.logs.String())
	}
}

func TestAdminCLIStatusTable(t *testing.T) {
	f := startAdmin(t)
	out, err := runCLI(t, "status", "--admin", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"VOLUME     ROLE       DISK      CONN        PEER  PEER-DISK  MODE  LAG        IN-FLIGHT\n" +
		"vol0       primary    UpToDate  CatchingUp  b     Outdated   sync  12/1.5MiB  3\n" +
		"scratch-1  secondary  Outdated  Connecting  a     DUnknown   -     0/0B       0\n" +
		"scratch-1: connection error: dial tcp 10.0.0.1:7789: connection refused\n"
	if out != want {
		t.Fatalf("status table:\n%s\nwant:\n%s", out, want)
	}

	out, err = runCLI(t, "status", "vol0", "--admin", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "vol0 ") {
		t.Fatalf("status vol0:\n%s", out)
	}
}

func TestStatusTableNoPeerAndFailed(t *testing.T) {
	var b bytes.Buffer
	err := writeStatusTable(&b, []engine.Status{{
		Name: "solo", Role: engine.RolePrimary, Disk: engine.DiskUpToDate, Conn: engine.ConnStandalone,
		InFlight: 7, Failed: "journal: fsync: input/output error",
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"VOLUME  ROLE     DISK      CONN        PEER  PEER-DISK  MODE  LAG  IN-FLIGHT\n" +
		"solo    primary  UpToDate  StandAlone  -     -          -     -    7\n" +
		"solo: FAILED: journal: fsync: input/output error\n"
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0B", 1023: "1023B", 1024: "1.0KiB", 1536: "1.5KiB", 10 << 20: "10.0MiB",
		3 << 30: "3.0GiB", 5 << 40: "5.0TiB", 1 << 62: "4096.0PiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAdminCLIStatusJSON(t *testing.T) {
	f := startAdmin(t)
	for _, c := range []struct {
		args []string
		want []engine.Status
	}{
		{[]string{"status", "--json", "--admin", f.sock}, []engine.Status{vol0Status(), vol1Status()}},
		{[]string{"status", "scratch-1", "--json", "--admin", f.sock}, []engine.Status{vol1Status()}},
	} {
		out, err := runCLI(t, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		var got []engine.Status
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: output is not a JSON array of statuses: %v\n%s", c.args, err, out)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Fatalf("%v: got %+v, want %+v", c.args, got, c.want)
		}
	}
}

func TestAdminCLIOperations(t *testing.T) {
	f := startAdmin(t)
	steps := []struct {
		args []string
		out  string
		call string
	}{
		{[]string{"demote", "vol0"}, "vol0: role secondary, disk UpToDate, connection CatchingUp, peer disk Outdated\n", "demote"},
		{[]string{"disconnect", "vol0"}, "vol0: role secondary, disk UpToDate, connection StandAlone\n", "disconnect"},
		{[]string{"connect", "vol0"}, "vol0: role secondary, disk UpToDate, connection Connecting\n", "connect"},
		{[]string{"promote", "vol0"}, "vol0: role primary, disk UpToDate, connection Connecting\n", "promote(force=false)"},
		{[]string{"promote", "vol0", "--force"}, "vol0: role primary, disk UpToDate, connection Connecting\n", "promote(force=true)"},
	}
	for _, s := range steps {
		out, err := runCLI(t, append(s.args, "--admin", f.sock)...)
		if err != nil {
			t.Fatalf("%v: %v", s.args, err)
		}
		if out != s.out {
			t.Fatalf("%v: printed %q, want %q", s.args, out, s.out)
		}
		if calls := f.vol0.calls(); calls[len(calls)-1] != s.call {
			t.Fatalf("%v: last call %v, want %s", s.args, calls, s.call)
		}
	}
	// --force belongs to promote only.
	if _, err := runCLI(t, "demote", "vol0", "--force", "--admin", f.sock); err == nil {
		t.Fatal("demote --force accepted")
	}
}

func TestAdminCLIErrors(t *testing.T) {
	f := startAdmin(t)
	cases := []struct {
		args   []string
		preset error
		is     error
		msg    string
	}{
		{[]string{"promote", "vol0"}, engine.ErrNotUpToDate, engine.ErrNotUpToDate,
			"promote vol0: promote(force=false) vol0: local copy is not up to date (use --force to promote anyway)"},
		{[]string{"promote", "vol0", "--force"}, engine.ErrPeerPrimary, engine.ErrPeerPrimary,
			"promote vol0: promote(force=true) vol0: peer is primary (demote the peer first)"},
		{[]string{"demote", "vol0"}, engine.ErrNotPrimary, engine.ErrNotPrimary,
			"demote vol0: demote vol0: volume is not primary"},
		{[]string{"demote", "vol0"}, context.DeadlineExceeded, context.DeadlineExceeded,
			"demote vol0: demote vol0: context deadline exceeded (writes in flight did not finish; the volume is still primary)"},
		{[]string{"connect", "vol0"}, engine.ErrNoPeer, engine.ErrNoPeer,
			"connect vol0: connect vol0: volume has no peer configured"},
		{[]string{"promote", "nope"}, nil, errNotFound,
			`promote nope: no volume "nope" on this daemon (it serves: vol0, scratch-1)`},
		{[]string{"status", "nope"}, nil, errNotFound,
			`status nope: no volume "nope" on this daemon (it serves: vol0, scratch-1)`},
	}
	for _, c := range cases {
		f.vol0.setErr(c.preset)
		_, err := runCLI(t, append(c.args, "--admin", f.sock)...)
		f.vol0.setErr(nil)
		if !errors.Is(err, c.is) {
			t.Fatalf("%v: err = %v, want errors.Is %v", c.args, err, c.is)
		}
		if err.Error() != c.msg {
			t.Fatalf("%v:\n got %q\nwant %q", c.args, err.Error(), c.msg)
		}
	}
}

// TestAdminCLIEngineStyleMessage checks the message users see when the
// engine returns a bare sentinel, as the brief's example shows.
func TestAdminCLIEngineStyleMessage(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "a.sock")
	v := &bareErrVolume{fakeVolume: newFakeVolume(vol0Status()), err: engine.ErrNotUpToDate}
	srv, err := newAdminServer(sock, []adminVolume{v}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = runCLI(t, "promote", "vol0", "--admin", sock)
	if want := "promote vol0: local copy is not up to date (use --force to promote anyway)"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// bareErrVolume fails Promote with an unwrapped engine sentinel.
type bareErrVolume struct {
	*fakeVolume
	err error
}

func (v *bareErrVolume) Promote(bool) error { return v.err }

func TestAdminCLINoDaemon(t *testing.T) {
	dir := shortTempDir(t)

	// No socket file at all.
	missing := filepath.Join(dir, "missing.sock")
	for _, args := range [][]string{{"status"}, {"promote", "vol0"}, {"demote", "vol0"}} {
		_, err := runCLI(t, append(args, "--admin", missing)...)
		want := "no daemon at " + missing + ": is `twinblock serve` running?"
		if !errors.Is(err, errNoDaemon) || err.Error() != want {
			t.Fatalf("%v: err = %v, want %q", args, err, want)
		}
	}

	// A socket file nobody listens on (a daemon that was killed).
	dead := filepath.Join(dir, "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := runCLI(t, "status", "--admin", dead); !errors.Is(err, errNoDaemon) {
		t.Fatalf("dead socket: err = %v, want no daemon", err)
	}

	// Something that answers but is not the admin API.
	junk := filepath.Join(dir, "junk.sock")
	jl, err := net.Listen("unix", junk)
	if err != nil {
		t.Fatal(err)
	}
	defer jl.Close()
	go http.Serve(jl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "teapot", http.StatusTeapot)
	}))
	if _, err := runCLI(t, "status", "--admin", junk); err == nil || !strings.Contains(err.Error(), "418") {
		t.Fatalf("non-admin server: err = %v, want the HTTP status", err)
	}
}

// TestAdminCLIFindsSocketFromConfig runs the CLI with --config only: the
// socket is found next to the config file.
func TestAdminCLIFindsSocketFromConfig(t *testing.T) {
	dir := shortTempDir(t)
	cfgPath := filepath.Join(dir, "twinblock.yaml")
	yaml := "volumes:\n  - name: vol0\n    backend: {type: mem, size: 1M}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := newAdminServer(filepath.Join(dir, "twinblock.sock"), []adminVolume{newFakeVolume(vol0Status())},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, err := runCLI(t, "status", "--json", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var sts []engine.Status
	if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 || sts[0].Name != "vol0" {
		t.Fatalf("status via --config: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "status", "--config", filepath.Join(dir, "missing.yaml")); err == nil ||
		!strings.Contains(err.Error(), "--admin PATH") {
		t.Fatalf("missing config: err = %v, want a hint about --admin", err)
	}
	if _, err := runCLI(t, "status", "--config", cfgPath, "--admin", srv.Path()); err == nil {
		t.Fatal("--config and --admin together accepted")
	}
}

// TestAdminCloseCancelsDemote: Close must not wait out a demote that never
// drains; it cancels it and the client gets an answer.
func TestAdminCloseCancelsDemote(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "a.sock")
	v := newFakeVolume(vol0Status())
	v.blockDemote = true
	logs := &syncBuffer{}
	srv, err := newAdminServer(sock, []adminVolume{v}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := runCLI(t, "demote", "vol0", "--admin", sock)
		errc <- err
	}()
	<-v.demoteActive
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	err = <-errc
	if err == nil {
		t.Fatal("demote cancelled by Close reported success")
	}
	v.mu.Lock()
	ctxErr := v.mu.demoteCtx.Err()
	v.mu.Unlock()
	if !errors.Is(ctxErr, context.Canceled) {
		t.Fatalf("demote context: %v, want canceled", ctxErr)
	}
	if v.Status().Role != engine.RolePrimary {
		t.Fatal("cancelled demote changed the role")
	}
	// Cancelled, not cut off after the grace period.
	if strings.Contains(logs.String(), "still running at close") {
		t.Fatalf("Close waited for the demote instead of cancelling it:\n%s", logs.String())
	}
}

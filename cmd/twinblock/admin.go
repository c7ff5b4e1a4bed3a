package main

// The admin socket: how `twinblock status`, `promote`, `demote`, `connect`
// and `disconnect` reach a running daemon.
//
// It is HTTP/1.1 with JSON bodies over a unix socket, so it can be driven by
// curl as well as by the CLI:
//
//	curl --unix-socket twinblock.sock http://twinblock/v1/status
//	curl --unix-socket twinblock.sock -X POST 'http://twinblock/v1/volumes/vol0/promote?force=false'
//
// Endpoints (all answers are JSON):
//
//	GET  /v1/status                          array of engine.Status, one per volume
//	GET  /v1/volumes/{name}                  one engine.Status
//	POST /v1/volumes/{name}/promote[?force=] 200 + the new Status
//	POST /v1/volumes/{name}/demote           (waits for writes in flight, up to adminDemoteTimeout)
//	POST /v1/volumes/{name}/connect
//	POST /v1/volumes/{name}/disconnect
//	POST /v1/volumes/{name}/resync[?rate=]   full checksummed resync (or a running one's rate)
//	POST /v1/volumes/{name}/verify[?repair=][&rate=]  starts an online verify; its progress
//	                                         and result are in the Status (verify)
//
// Failures answer {"error": "...", "code": "..."} with the HTTP status of
// adminCodes; clients switch on code, never on the message.
//
// Access control is the file mode: the socket is 0600, so only the daemon's
// user (and root) can connect. The socket is bound inside a private 0700
// directory and hard-linked into place, so there is no moment at which it
// exists at its public path with looser permissions.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twinblock/twinblock/engine"
)

// adminVolume is what the admin server needs from a volume (engine.Volume implements it).
type adminVolume interface {
	Name() string
	Status() engine.Status
	Promote(force bool) error         // secondary -> primary
	Demote(ctx context.Context) error // primary -> secondary: drains in-flight writes first
	Connect() error                   // (re)enable the peer link
	Disconnect() error                // drop the peer link and stay StandAlone until Connect
}

const (
	// adminDemoteTimeout bounds how long a demote waits for writes in
	// flight; the client waits a little longer so it sees the server's
	// answer rather than its own timeout.
	adminDemoteTimeout = 60 * time.Second
	// adminCloseGrace is how long Close lets running requests finish after
	// cancelling their contexts.
	adminCloseGrace = 5 * time.Second
)

// Errors of the admin API that have no engine sentinel, so that the client
// can test them with errors.Is as well.
var (
	errNotFound    = errors.New("admin: not found") // unknown volume, operation or endpoint
	errBadRequest  = errors.New("admin: bad request")
	errNoDaemon    = errors.New("no daemon")
	errAdminDenied = errors.New("admin: permission denied")
)

// adminReqError is a request error whose message is for the user as is
// (no "admin: not found: " in front) and which still matches its sentinel.
type adminReqError struct {
	sentinel error
	msg      string
}

func (e *adminReqError) Error() string { return e.msg }
func (e *adminReqError) Unwrap() error { return e.sentinel }

func adminReqErr(sentinel error, format string, args ...any) error {
	return &adminReqError{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

// adminCodes maps errors to wire codes and HTTP statuses, in order of
// precedence (the first errors.Is match wins). The client reads the same
// table backwards to rebuild an error that wraps the sentinel.
var adminCodes = []struct {
	err    error
	code   string
	status int
}{
	{errNotFound, "not_found", http.StatusNotFound},
	{errBadRequest, "bad_request", http.StatusBadRequest},
	{engine.ErrNotPrimary, "not_primary", http.StatusConflict},
	{engine.ErrNotSecondary, "not_secondary", http.StatusConflict},
	{engine.ErrNotUpToDate, "not_up_to_date", http.StatusConflict},
	{engine.ErrPeerPrimary, "peer_primary", http.StatusConflict},
	{engine.ErrNoPeer, "no_peer", http.StatusConflict},
	{engine.ErrBusy, "busy", http.StatusConflict},
	{engine.ErrNotConnected, "not_connected", http.StatusConflict},
	{engine.ErrReadOnly, "read_only", http.StatusConflict},
	{engine.ErrClosed, "closed", http.StatusServiceUnavailable},
	{engine.ErrFailed, "failed", http.StatusInternalServerError},
	{context.DeadlineExceeded, "timeout", http.StatusGatewayTimeout},
	{context.Canceled, "canceled", http.StatusServiceUnavailable},
}

const (
	codeMethodNotAllowed = "method_not_allowed"
	codeInternal         = "internal"
)

// adminErrorBody is the JSON of every failed request.
type adminErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// adminServer serves the admin API on a unix socket.
type adminServer struct {
	path  string
	ln    net.Listener
	srv   *http.Server
	log   *slog.Logger
	vols  []adminVolume // in config order, for /v1/status
	byNam map[string]adminVolume

	// cancel ends the base context of every request: Close uses it to
	// abort a demote that is still draining.
	cancel context.CancelFunc
	served chan struct{} // closed when Serve has returned

	closeOnce sync.Once
	closeErr  error
}

// newAdminServer listens on a unix socket at path (mode 0600) and serves
// the admin API for vols until Close. A socket file left by a dead process
// is replaced; one a live process answers on is an error.
func newAdminServer(path string, vols []adminVolume, log *slog.Logger) (*adminServer, error) {
	if log == nil {
		log = slog.Default()
	}
	if path == "" {
		return nil, errors.New("admin socket: empty path")
	}
	s := &adminServer{path: path, log: log, vols: slices.Clone(vols), byNam: map[string]adminVolume{}}
	for _, v := range vols {
		if _, dup := s.byNam[v.Name()]; dup {
			return nil, fmt.Errorf("admin socket: volume %q given twice", v.Name())
		}
		s.byNam[v.Name()] = v
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("admin %w", err)
	}
	ln, err := listenPrivateUnix(path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s.ln = ln

	mux := http.NewServeMux()
	// Methods are checked in the handlers rather than in the patterns, so
	// that a wrong method gets a JSON 405 and not the mux's plain text.
	mux.HandleFunc("/v1/status", s.handleStatus)
	mux.HandleFunc("/v1/volumes/{name}", s.handleVolume)
	mux.HandleFunc("/v1/volumes/{name}/{op}", s.handleOp)
	mux.HandleFunc("/v1/volumes/{name}/resync", s.handleResync)
	mux.HandleFunc("/v1/volumes/{name}/verify", s.handleVerify)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, adminReqErr(errNotFound, "no endpoint %s %s", r.Method, r.URL.Path))
	})
	base, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket stopped", "socket", path, "err", err)
		}
	}()
	log.Info("admin socket listening", "socket", path)
	return s, nil
}

// Path is where the socket listens.
func (s *adminServer) Path() string { return s.path }

// Close stops accepting, cancels requests in flight (a draining demote
// returns with context.Canceled), waits up to adminCloseGrace for them to
// answer and removes the socket file. Call it before closing the volumes.
func (s *adminServer) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), adminCloseGrace)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.log.Warn("admin socket: requests still running at close", "err", err)
			s.closeErr = s.srv.Close()
		}
		<-s.served
		// The listener was bound at a temporary name, so it does not
		// unlink the public path itself.
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) && s.closeErr == nil {
			s.closeErr = fmt.Errorf("admin socket: %w", err)
		}
	})
	return s.closeErr
}

// listenPrivateUnix binds a unix socket that is never reachable with a mode
// wider than 0600: bind in a fresh 0700 directory, chmod, then hard-link to
// path. Link (unlike rename) fails if path appeared meanwhile, so a socket
// another daemon just created is never replaced.
func listenPrivateUnix(path string) (net.Listener, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".tb")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%s appeared while binding (another daemon starting?)", path)
		}
		return nil, err
	}
	return ln, nil
}

func (s *adminServer) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	out := make([]engine.Status, 0, len(s.vols))
	for _, v := range s.vols {
		out = append(out, v.Status())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *adminServer) handleVolume(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	v, err := s.volume(r.PathValue("name"))
	if err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v.Status())
}

func (s *adminServer) volume(name string) (adminVolume, error) {
	if v, ok := s.byNam[name]; ok {
		return v, nil
	}
	names := make([]string, len(s.vols))
	for i, v := range s.vols {
		names[i] = v.Name()
	}
	return nil, adminReqErr(errNotFound, "no volume %q on this daemon (it serves: %s)", name, strings.Join(names, ", "))
}

// handleOp runs one role or link change and answers with the new status.
func (s *adminServer) handleOp(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	switch op {
	case "promote", "demote", "connect", "disconnect":
	default:
		writeAdminError(w, adminReqErr(errNotFound, "no operation %q (want promote, demote, connect or disconnect)", op))
		return
	}
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	v, err := s.volume(r.PathValue("name"))
	if err != nil {
		writeAdminError(w, err)
		return
	}
	force, err := parseOpQuery(op, r)
	if err != nil {
		writeAdminError(w, err)
		return
	}

	log := s.log.With("via", "admin socket", "op", op, "volume", v.Name())
	if op == "promote" {
		log = log.With("force", force)
	}
	before := v.Status()
	log.Info("admin request", "role", before.Role, "disk", before.Disk, "connection", before.Conn)
	start := time.Now()
	switch op {
	case "promote":
		err = v.Promote(force)
	case "demote":
		ctx, cancel := context.WithTimeout(r.Context(), adminDemoteTimeout)
		err = v.Demote(ctx)
		cancel()
	case "connect":
		err = v.Connect()
	case "disconnect":
		err = v.Disconnect()
	}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		log.Info("admin request failed", "err", err, "took", took)
		writeAdminError(w, err)
		return
	}
	st := v.Status()
	log.Info("admin request done", "role", st.Role, "disk", st.Disk, "connection", st.Conn, "took", took)
	writeJSON(w, http.StatusOK, st)
}

// parseOpQuery accepts force (promote only) and nothing else: a misspelt
// parameter must not silently become a default.
func parseOpQuery(op string, r *http.Request) (force bool, err error) {
	q := r.URL.Query()
	for k := range q {
		if k != "force" || op != "promote" {
			return false, adminReqErr(errBadRequest, "%s takes no parameter %q", op, k)
		}
	}
	if vs, ok := q["force"]; ok {
		if len(vs) != 1 {
			return false, adminReqErr(errBadRequest, "force given %d times", len(vs))
		}
		force, err = strconv.ParseBool(vs[0])
		if err != nil {
			return false, adminReqErr(errBadRequest, "force=%q: want true or false", vs[0])
		}
	}
	return force, nil
}

func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeJSON(w, http.StatusMethodNotAllowed, adminErrorBody{
		Error: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method),
		Code:  codeMethodNotAllowed,
	})
	return false
}

// adminCodeOf returns the wire code and HTTP status for err.
func adminCodeOf(err error) (string, int) {
	for _, c := range adminCodes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return codeInternal, http.StatusInternalServerError
}

func writeAdminError(w http.ResponseWriter, err error) {
	code, status := adminCodeOf(err)
	writeJSON(w, status, adminErrorBody{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(adminErrorBody{Error: err.Error(), Code: codeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

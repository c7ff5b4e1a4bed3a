package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// shutdownScript puts N FUA writes of BS bytes in flight at once, each to
// its own offset with a pattern naming its index. As soon as libnbd has
// sent them all (the server is then busy writing and syncing them) it
// sends SIGTERM to the server, and reports how every command ended: "ok",
// the errno name of the server's error reply, or ENOTCONN/"unfinished"
// when the connection closed without a reply. "at_kill" marks commands
// still unanswered when the signal went out.
const shutdownScript = `
import os, signal, json, time
cmds = {}
for i in range(N):
    cmds[h.aio_pwrite(i.to_bytes(8, "little") * (BS // 8), i * BS, flags=nbd.CMD_FLAG_FUA)] = i
results = []
inflight_at_kill = set()

def reap():
    for c in list(cmds):
        try:
            done = h.aio_command_completed(c)
            state = "ok"
        except nbd.Error as e:
            done = True
            state = e.errno or ("errnum %d" % e.errnum)
        if done:
            results.append({"i": cmds[c], "state": state, "at_kill": c in inflight_at_kill})
            del cmds[c]

deadline = time.monotonic() + 30
while h.aio_get_direction() & nbd.AIO_DIRECTION_WRITE and time.monotonic() < deadline:
    h.poll(100)
reap()
inflight_at_kill = set(cmds)
os.kill(PID, signal.SIGTERM)
while cmds and time.monotonic() < deadline:
    try:
        h.poll(100)
    except nbd.Error:
        pass
    reap()
    if h.aio_is_dead() or h.aio_is_closed():
        break
reap()
for c, i in cmds.items():
    results.append({"i": i, "state": "unfinished", "at_kill": c in inflight_at_kill})
print("RESULTS " + json.dumps({"results": results}))
`

type shutdownResult struct {
	Index  int    `json:"i"`
	State  string `json:"state"`
	AtKill bool   `json:"at_kill"`
}

// TestShutdownDrainsInFlightWrites sends SIGTERM while eight 16 MiB FUA
// writes are in flight. The server must exit 0 having answered what it
// was serving: every reply is a success or ESHUTDOWN (proto.md's answer
// for requests a shutting-down server will not run), never another error;
// requests in flight at the signal get replies rather than a dropped
// connection; and every write acknowledged as done is in the backing file.
func TestShutdownDrainsInFlightWrites(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdsh")
	// Large writes keep the server busy (receiving, writing, syncing) for
	// long enough that the signal lands while they are in flight.
	const bs, n = 16 * mib, 8
	img := filepath.Join(t.TempDir(), "vol0.img")
	sparseFile(t, img, n*bs)
	s := startServer(t, serveOptions{args: []string{"--name", "vol0", "--backend", "file", "--path", img}})

	script := fmt.Sprintf("PID, N, BS = %d, %d, %d\n%s", s.cmd.Process.Pid, n, bs, shutdownScript)
	r := nbdsh(t, s.URI("vol0"), script)
	if code := s.Wait(); code != 0 {
		t.Fatalf("twinblock serve exited %d after SIGTERM with requests in flight, want 0", code)
	}
	i := strings.Index(r.stdout, "RESULTS ")
	if r.err != nil || i < 0 {
		t.Fatalf("nbdsh: %s", r)
	}
	var out struct {
		Results []shutdownResult `json:"results"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout[i+len("RESULTS "):])), &out); err != nil {
		t.Fatalf("nbdsh results: %v\n%s", err, r.stdout)
	}
	if len(out.Results) != n {
		t.Fatalf("the script reported %d writes, want %d:\n%s", len(out.Results), n, r)
	}
	log := s.Log()
	for _, want := range []string{"draining", "stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("server log does not say %q:\n%s", want, log)
		}
	}

	counts := map[string]int{}
	var ok []int
	answeredAtKill := 0
	for _, res := range out.Results {
		counts[res.State]++
		switch res.State {
		case "ok":
			ok = append(ok, res.Index)
			if res.AtKill {
				answeredAtKill++
			}
		case "ESHUTDOWN":
			if res.AtKill {
				answeredAtKill++
			}
		case "ENOTCONN", "unfinished":
			// Never reached the server's reader, or still in its socket
			// buffer when it stopped reading: no reply, and no claim made.
		default:
			t.Errorf("write %d got %s from a shutting-down server; want success or ESHUTDOWN", res.Index, res.State)
		}
	}
	t.Logf("outcomes of %d FUA writes: %v; %d of those in flight at SIGTERM were answered", len(out.Results), counts, answeredAtKill)
	if answeredAtKill == 0 {
		t.Errorf("no write in flight at SIGTERM got a reply: the connection was dropped instead of drained")
	}
	// libnbd had sent every request before the signal, so each one is in
	// the server's hands or its socket buffer. A draining server stops
	// reading at a request boundary and answers everything it has read;
	// only the request whose payload it was still receiving may go
	// unanswered. More means replies were dropped.
	if lost := counts["ENOTCONN"] + counts["unfinished"]; lost > 1 {
		t.Errorf("%d writes sent before SIGTERM got no reply (at most 1, the one being received, may)", lost)
	}

	// Every acknowledged FUA write is in the file.
	data := readFile(t, img)
	for _, idx := range ok {
		region := data[idx*bs : (idx+1)*bs]
		var want [8]byte
		binary.LittleEndian.PutUint64(want[:], uint64(idx))
		if !bytes.Equal(region, bytes.Repeat(want[:], bs/8)) {
			t.Errorf("write %d was acknowledged but its data is not in the backing file", idx)
		}
	}
}

// TestShutdownWhileCopying sends SIGTERM while nbdcopy streams into an
// export from a pipe: the server must drain, log it and exit 0 without
// waiting for the client to finish, and the client must not hang.
func TestShutdownWhileCopying(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdcopy")
	s := memServer(t, "256M", false)

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	cmd := command(ctx, t, "nbdcopy", "--requests=16", "-", s.URI("vol0"))
	cmd.Stdin = pr
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	go func() {
		chunk := randomBytes(mib, 5)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}()
	deadline := time.Now().Add(clientTimeout / 2)
	for written.Load() < 16*mib {
		if time.Now().After(deadline) {
			t.Fatalf("nbdcopy took only %d bytes in %v; stderr:\n%s", written.Load(), clientTimeout/2, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop()
	log := s.Log()
	for _, want := range []string{"client connected", "draining", "stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("server log does not say %q:\n%s", want, log)
		}
	}
	// The client lost its server mid-copy: it must notice and exit.
	pw.CloseWithError(io.ErrClosedPipe)
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("nbdcopy hung after the server shut down: %v\n%s", err, stderr.String())
	}
	if err == nil {
		t.Errorf("nbdcopy succeeded although the server stopped mid-copy (after %d bytes)", written.Load())
	}
}

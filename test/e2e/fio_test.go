package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

type fioIO struct {
	IOBytes  int64 `json:"io_bytes"`
	TotalIOs int64 `json:"total_ios"`
}

type fioJob struct {
	Name  string `json:"jobname"`
	Error int    `json:"error"`
	Read  fioIO  `json:"read"`
	Write fioIO  `json:"write"`
	Sync  struct {
		TotalIOs int64 `json:"total_ios"`
	} `json:"sync"`
}

type fioOutput struct {
	Jobs []fioJob `json:"jobs"`
}

const fioJobSize = 64 * mib

// fioVerify runs a 4k random-write pass at queue depth 32 on two
// connections, each job on its own 64 MiB region, then the read pass that
// checks every block's crc32c. extra adds options.
func fioVerify(t *testing.T, uri string, extra ...string) fioJob {
	t.Helper()
	j := fio(t, uri, extra...)
	if j.Write.IOBytes != 2*fioJobSize {
		t.Errorf("fio wrote %d bytes, want %d", j.Write.IOBytes, 2*fioJobSize)
	}
	// The verify pass reads back every block written.
	if j.Read.IOBytes != 2*fioJobSize {
		t.Errorf("fio verify read %d bytes, want %d", j.Read.IOBytes, 2*fioJobSize)
	}
	return j
}

// fio runs the verify workload and checks that it reported no error.
func fio(t *testing.T, uri string, extra ...string) fioJob {
	t.Helper()
	const jobSize = fioJobSize
	args := append([]string{
		"--name=verify", "--ioengine=nbd", "--uri=" + uri,
		"--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=2",
		fmt.Sprintf("--size=%d", jobSize),
		fmt.Sprintf("--offset_increment=%d", jobSize), // jobs must not overlap, or verify fails legitimately
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
		"--group_reporting", "--output-format=json",
	}, extra...)
	// fio saves verify state files (local-verify-N-verify.state) in its
	// working directory: keep them out of the source tree.
	r := runSpec(t, cmdSpec{name: "fio", args: args, timeout: fioTimeout, dir: t.TempDir()})
	if r.err != nil {
		t.Fatalf("fio: %s", r)
	}
	// fio's nbd engine prints "fio: connected to NBD server" on stdout
	// before the JSON document.
	i := strings.Index(r.stdout, "\n{")
	js := r.stdout
	if i >= 0 {
		js = r.stdout[i+1:]
	}
	var out fioOutput
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatalf("fio JSON: %v\n%s", err, r)
	}
	if len(out.Jobs) != 1 {
		t.Fatalf("fio: %d job reports, want 1 (group_reporting)", len(out.Jobs))
	}
	j := out.Jobs[0]
	if j.Error != 0 {
		t.Fatalf("fio job error %d:\n%s", j.Error, r)
	}
	if strings.Contains(r.stdout+r.stderr, "verify:") {
		t.Fatalf("fio reported verify errors:\n%s", r)
	}
	return j
}

// TestFioVerifyMem: many requests in flight on two connections at once,
// every block checked afterwards.
func TestFioVerifyMem(t *testing.T) {
	t.Parallel()
	needTools(t, "fio")
	s := memServer(t, "128M", true)
	fioVerify(t, s.URI("vol0"))
	fioVerify(t, s.UnixURI("vol0"))
	s.Stop()
}

// TestFioVerifyFile is the same on the file backend, with a FLUSH every
// 64 writes and at the end (fio turns fsync= and end_fsync= into NBD
// FLUSH), then a second verify-only pass after a restart.
func TestFioVerifyFile(t *testing.T) {
	t.Parallel()
	needTools(t, "fio")
	img := filepath.Join(t.TempDir(), "fio.img")
	sparseFile(t, img, 128*mib)
	args := serveOptions{args: []string{"--name", "vol0", "--backend", "file", "--path", img}}
	s := startServer(t, args)
	j := fioVerify(t, s.URI("vol0"), "--fsync=64", "--end_fsync=1")
	if j.Sync.TotalIOs == 0 {
		t.Errorf("fio sent no flushes (sync total_ios 0)")
	}
	s.Stop()

	// fio regenerates the same offsets and contents from its seed and
	// checks them without writing.
	s = startServer(t, args)
	j = fio(t, s.URI("vol0"), "--verify_only")
	// (fio still reports the skipped writes as written.)
	if j.Read.IOBytes != 2*fioJobSize {
		t.Errorf("fio --verify_only read %d bytes, want %d", j.Read.IOBytes, 2*fioJobSize)
	}
	s.Stop()
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExt4 puts a real filesystem on an export: nbdfuse shows the export
// as a file, a loop device turns it into a block device, and ext4 on it is
// created, mounted, filled with files, synced and unmounted (ext4 sends
// FLUSH on sync and unmount). Then the whole export is copied out with
// nbdcopy, e2fsck must find it clean, and every file read back with
// debugfs must match what was written.
func TestExt4(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdfuse", "nbdcopy", "losetup", "mkfs.ext4", "e2fsck", "debugfs", "mount", "umount")
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mount")
	}
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skipf("needs %s: %v", dev, err)
		}
	}

	start := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	dir := t.TempDir()
	img := filepath.Join(dir, "vol0.img")
	const size = 256 * mib
	sparseFile(t, img, size)
	s := startServer(t, serveOptions{args: []string{"--name", "vol0", "--backend", "file", "--path", img}})
	fuseDir := filepath.Join(dir, "fuse")
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{fuseDir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(fuseDir, "disk")

	// nbdfuse runs in the foreground until its mount point is unmounted.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	fuse := command(ctx, t, "nbdfuse", disk, s.URI("vol0"))
	var fuseLog syncBuffer
	fuse.Stdout, fuse.Stderr = &fuseLog, &fuseLog
	if err := fuse.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	// fuseDone is closed when nbdfuse has exited, fuseErr is then its
	// exit status.
	fuseDone := make(chan struct{})
	var fuseErr error
	go func() {
		fuseErr = fuse.Wait()
		close(fuseDone)
	}()
	fuseMounted := true
	t.Cleanup(func() {
		if fuseMounted {
			run(t, "umount", "-l", fuseDir)
		}
		select {
		case <-fuseDone:
		case <-time.After(10 * time.Second):
		}
		cancel()
		if t.Failed() {
			t.Logf("nbdfuse output:\n%s", fuseLog.String())
		}
	})
	waitForFile(t, disk, size, fuseDone)

	r := mustRun(t, "losetup", "-f", "--show", disk)
	loop := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(loop, "/dev/loop") {
		t.Fatalf("losetup printed %q, want a /dev/loopN", loop)
	}
	loopAttached := true
	t.Cleanup(func() {
		// Only our own device: after a successful detach the number may
		// already belong to someone else.
		if loopAttached {
			run(t, "losetup", "-d", loop)
		}
	})

	phase("loop device attached")
	mustRun(t, "mkfs.ext4", "-q", loop)
	phase("mkfs done")
	mustRun(t, "mount", "-t", "ext4", loop, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			run(t, "umount", "-l", mnt)
		}
	})

	files := map[string][]byte{
		"a.bin":          randomBytes(3*mib, 21),
		"b.bin":          randomBytes(1*mib+123, 22),
		"dir/c.bin":      randomBytes(5*mib, 23),
		"dir/sub/d.txt":  []byte(strings.Repeat("twinblock e2e\n", 1000)),
		"dir/sub/e.bin":  randomBytes(64*kib, 24),
		"empty-file.txt": nil,
	}
	for name, data := range files {
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeSynced(t, p, data)
	}
	phase("files written")
	mustRun(t, "sync")
	phase("synced")
	mustRun(t, "umount", mnt)
	mounted = false
	phase("ext4 unmounted")
	mustRun(t, "losetup", "-d", loop)
	loopAttached = false
	mustRun(t, "umount", fuseDir)
	fuseMounted = false
	select {
	case <-fuseDone:
		if fuseErr != nil {
			t.Errorf("nbdfuse exited with %v after unmount:\n%s", fuseErr, fuseLog.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("nbdfuse did not exit after its mount point was unmounted")
	}

	phase("nbdfuse unmounted")
	out := filepath.Join(dir, "out.img")
	mustRun(t, "nbdcopy", s.URI("vol0"), out)
	phase("copied out")
	s.Stop()
	if r := run(t, "e2fsck", "-fn", out); r.err != nil {
		t.Fatalf("e2fsck -fn of the copied-out export: %s", r)
	}
	phase("e2fsck clean")
	for name, data := range files {
		dump := filepath.Join(dir, "dump-"+strings.ReplaceAll(name, "/", "_"))
		r := run(t, "debugfs", "-R", fmt.Sprintf("dump /%s %s", name, dump), out)
		got, err := os.ReadFile(dump)
		if err != nil {
			t.Errorf("debugfs dump /%s: %v\n%s", name, err, r)
			continue
		}
		if sha(got) != sha(data) {
			t.Errorf("/%s: %d bytes sha256 %s read back, wrote %d bytes sha256 %s", name, len(got), sha(got), len(data), sha(data))
		}
	}
	phase("files compared")
	// The server wrote through to its backing file.
	if a, b := fileSHA(t, img), fileSHA(t, out); a != b {
		t.Errorf("backing file sha256 %s, export copied out %s", a, b)
	}
	phase("backing file compared")
}

// waitForFile waits until nbdfuse shows the export as a file of size bytes.
func waitForFile(t *testing.T, path string, size int64, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			return
		}
		select {
		case <-exited:
			t.Fatalf("nbdfuse exited before showing %s", path)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear with size %d within %v", path, size, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeSynced(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		t.Fatalf("fsync %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

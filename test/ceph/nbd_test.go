//go:build ceph

package ceph

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// qemuIO runs qemu-io commands against an NBD URI and fails on any error
// (qemu-io exits 0 even when a command fails, so its output is checked).
func qemuIO(t *testing.T, uri string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	r := runIn(t, "", clientTimeout, "qemu-io", append(args, uri)...)
	out := r.stdout + r.stderr
	if r.err != nil || strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
		t.Fatalf("qemu-io %q: %s", cmds, r)
	}
	return out
}

type fioJob struct {
	Error int `json:"error"`
	Read  struct {
		IOBytes int64 `json:"io_bytes"`
	} `json:"read"`
	Write struct {
		IOBytes int64 `json:"io_bytes"`
	} `json:"write"`
}

const (
	fioJobSize = 64 * mib
	fioBase    = 64 * mib
)

// fioVerify writes 4k blocks at random at queue depth 32 on two
// connections (one 64 MiB region each, from fioBase), then reads every
// block back and checks its crc32c.
func fioVerify(t *testing.T, uri string, extra ...string) fioJob {
	t.Helper()
	args := append([]string{
		"--name=verify", "--ioengine=nbd", "--uri=" + uri,
		"--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=2",
		fmt.Sprintf("--offset=%d", fioBase),
		fmt.Sprintf("--size=%d", fioJobSize),
		fmt.Sprintf("--offset_increment=%d", fioJobSize),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
		"--group_reporting", "--output-format=json",
	}, extra...)
	r := runIn(t, t.TempDir(), 3*time.Minute, "fio", args...)
	if r.err != nil {
		t.Fatalf("fio: %s", r)
	}
	js := r.stdout
	if i := strings.Index(js, "\n{"); i >= 0 {
		js = js[i+1:]
	}
	var out struct {
		Jobs []fioJob `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(js), &out); err != nil || len(out.Jobs) != 1 {
		t.Fatalf("fio JSON: %v\n%s", err, r)
	}
	j := out.Jobs[0]
	if j.Error != 0 || strings.Contains(r.stdout+r.stderr, "verify:") {
		t.Fatalf("fio reported errors:\n%s", r)
	}
	if j.Read.IOBytes != 2*fioJobSize {
		t.Fatalf("fio verify read %d bytes, want %d", j.Read.IOBytes, 2*fioJobSize)
	}
	return j
}

// TestRBDVolumeNBD drives an rbd-backed volume with qemu-io and fio over
// NBD, then checks with another client (rbd export) that the bytes are in
// the image, and with qemu-io and fio that they survive a restart.
func TestRBDVolumeNBD(t *testing.T) {
	needTools(t, "qemu-io", "fio")
	n := newNode(t, shortTempDir(t), "a")
	n.create("256M", n.rbdArgs(clusterA))
	n.Start()
	uri := n.Srv.URI(volume)

	qemuIO(t, uri,
		"write -P 0x5a 0 1M",
		"write -P 0xa5 3M 256k",
		"write -P 0x77 2M 64k",
		"write -z 0 4096",        // WRITE_ZEROES
		"discard 512k 64k",       // TRIM of a whole 64k granule
		"discard 2052k 8k",       // TRIM inside an object: must read back zeroes
		"write -z -u 3200k 4096", // WRITE_ZEROES that may unmap
		"flush",
	)
	check := []string{
		"read -P 0 0 4096",
		"read -P 0x5a 4096 520192", // up to 512k
		"read -P 0 512k 64k",
		"read -P 0x5a 576k 448k",
		"read -P 0x77 2M 4k",
		"read -P 0 2052k 8k",
		"read -P 0x77 2060k 52k",
		"read -P 0xa5 3M 128k",
		"read -P 0 3200k 4k",
		"read -P 0xa5 3204k 124k",
		"read -P 0 4M 1M", // never written
	}
	qemuIO(t, uri, check...)
	fioVerify(t, uri, "--fsync=64", "--end_fsync=1")
	n.Stop()

	// After a clean stop the image itself holds everything: read it with
	// rbd export, not through twinblock.
	img := exportImage(t, clusterA, n.image)
	if len(img) != 256*mib {
		t.Fatalf("exported image: %d bytes", len(img))
	}
	want := func(off, length int, b byte) {
		t.Helper()
		if !bytes.Equal(img[off:off+length], bytes.Repeat([]byte{b}, length)) {
			t.Fatalf("rbd export: [%d, %d) is not all %#x", off, off+length, b)
		}
	}
	want(0, 4096, 0)
	want(4096, 512*kib-4096, 0x5a)
	want(512*kib, 64*kib, 0)
	want(2*mib, 4*kib, 0x77)
	want(2052*kib, 8*kib, 0)
	want(3*mib, 128*kib, 0xa5)
	want(3200*kib, 4*kib, 0)

	// Restart: the same bytes, and fio finds every block it wrote.
	n.Start()
	qemuIO(t, n.Srv.URI(volume), check...)
	args := []string{"--verify_only"}
	fioVerify(t, n.Srv.URI(volume), args...)
	n.Stop()
}

// TestRBDServeBadSettings: serve refuses to start, before exporting
// anything, when the image, the pool or the key is wrong, and says which.
func TestRBDServeBadSettings(t *testing.T) {
	n := newNode(t, shortTempDir(t), "a")
	n.create("16M", n.rbdArgs(clusterA))
	cases := []struct{ from, to, want string }{
		{"image: " + n.image, "image: nosuchimage", "rbd: image not found: rbd/nosuchimage does not exist"},
		{"pool: rbd", "pool: nosuchpool", `rbd: pool not found: "nosuchpool" does not exist`},
		{"keyring: " + clusterA.Keyring, "keyring: " + clusterB.Keyring, "client.admin was refused (check its key in " + clusterB.Keyring},
	}
	orig := readText(t, n.Cfg)
	for _, tc := range cases {
		if !strings.Contains(orig, tc.from) {
			t.Fatalf("config has no %q:\n%s", tc.from, orig)
		}
		writeText(t, n.Cfg, strings.Replace(orig, tc.from, tc.to, 1))
		start := time.Now()
		r := runIn(t, n.Dir, clientTimeout, tbBin, "serve", "--config", n.Cfg, "--listen", freeAddr(t))
		if r.err == nil {
			t.Fatalf("serve with %q started:\n%s", tc.to, r)
		}
		if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "volume vol0") {
			t.Fatalf("serve with %q: stderr does not say %q:\n%s", tc.to, tc.want, r.stderr)
		}
		if strings.Contains(r.stderr, "exporting") {
			t.Fatalf("serve exported before failing:\n%s", r.stderr)
		}
		t.Logf("%s -> %q after %v", tc.to, strings.TrimSpace(r.stderr[strings.LastIndex(strings.TrimSpace(r.stderr), "\n")+1:]), time.Since(start).Round(time.Millisecond))
	}
}

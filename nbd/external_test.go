package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Real NBD clients against the server: nbdinfo, nbdsh (libnbd) and
// qemu-io (qemu's own client). Each is skipped when not installed and
// runs under a timeout.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestNbdinfo(t *testing.T) {
	bin := needTool(t, "nbdinfo")
	s := newTestServer(t, ServerOptions{},
		&Export{Name: "vol0", Description: "the first", Device: newMemDevice(testSize)},
		&Export{Name: "ro", Device: newMemDevice(testSize), ReadOnly: true})
	_, addr := listen(t, s, "tcp")

	var info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name         string `json:"export-name"`
			Description  string `json:"description"`
			Size         uint64 `json:"export-size"`
			ReadOnly     bool   `json:"is_read_only"`
			CanFlush     bool   `json:"can_flush"`
			CanFUA       bool   `json:"can_fua"`
			CanTrim      bool   `json:"can_trim"`
			CanZero      bool   `json:"can_zero"`
			CanFastZero  bool   `json:"can_fast_zero"`
			CanMultiConn bool   `json:"can_multi_conn"`
			CanCache     bool   `json:"can_cache"`
			BlockMin     uint32 `json:"block_size_minimum"`
			BlockPref    uint32 `json:"block_size_preferred"`
			BlockMax     uint32 `json:"block_size_maximum"`
		} `json:"exports"`
	}
	out := runTool(t, nil, bin, "--json", "nbd://"+addr+"/vol0")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if info.Protocol != "newstyle-fixed" || info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := info.Exports[0]
	if e.Name != "vol0" || e.Description != "the first" || e.Size != testSize || e.ReadOnly ||
		!e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || e.CanFastZero || !e.CanMultiConn || !e.CanCache ||
		e.BlockMin != 1 || e.BlockPref != 4096 || e.BlockMax != 32<<20 {
		t.Fatalf("nbdinfo: %s", out)
	}

	out = runTool(t, nil, bin, "--json", "nbd://"+addr+"/ro")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if e := info.Exports[0]; !e.ReadOnly || e.CanTrim || e.CanZero || e.CanFUA {
		t.Fatalf("read-only export: %s", out)
	}

	out = runTool(t, nil, bin, "--list", "--json", "nbd://"+addr)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Exports) != 2 || info.Exports[0].Name != "ro" || info.Exports[1].Name != "vol0" {
		t.Fatalf("nbdinfo --list: %s", out)
	}
}

func TestQemuIO(t *testing.T) {
	bin := needTool(t, "qemu-io")
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			dev := newMemDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			_, addr := listen(t, s, network)
			uri := "nbd://" + addr + "/vol0"
			if network == "unix" {
				uri = "nbd+unix:///vol0?socket=" + addr
			}
			out := runTool(t, nil, bin, "-f", "raw",
				"-c", "write -P 0xab 0 64k",
				"-c", "write -f -P 0xcd 64k 64k", // FUA
				"-c", "aio_write -P 0x11 128k 4k",
				"-c", "aio_write -P 0x22 256k 4k",
				"-c", "aio_flush",
				"-c", "flush",
				"-c", "read -P 0xab 0 64k",
				"-c", "read -P 0xcd 64k 64k",
				"-c", "read -P 0x22 256k 4k",
				"-c", "write -z 0 4k",
				"-c", "read -P 0 0 4k",
				"-c", "discard 64k 4k",
				uri)
			if strings.Contains(out, "failed") || strings.Contains(out, "error") {
				t.Fatalf("qemu-io: %s", out)
			}
			if dev.data[4096] != 0xab || dev.data[128<<10] != 0x11 || dev.data[0] != 0 || dev.flushes.Load() == 0 || dev.fuas.Load() == 0 || dev.trims.Load() != 1 {
				t.Fatalf("device after qemu-io: flushes %d fuas %d trims %d\n%s", dev.flushes.Load(), dev.fuas.Load(), dev.trims.Load(), out)
			}
			// A read past the end is refused, and qemu-io says so.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			bad, _ := exec.CommandContext(ctx, bin, "-f", "raw", "-c", fmt.Sprintf("read %d 4k", testSize), uri).CombinedOutput()
			if !strings.Contains(string(bad), "failed") {
				t.Fatalf("read past end: %s", bad)
			}
		})
	}
}

func TestNbdsh(t *testing.T) {
	needTool(t, "nbdsh")
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	dev := newMemDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	_, addr := listen(t, s, "unix")
	script := filepath.Join(t.TempDir(), "check.py")
	// libnbd asks for structured replies and falls back; errors come back
	// as exceptions carrying the errno, and the connection survives them.
	err := os.WriteFile(script, []byte(`
import errno
# Strict mode off: libnbd sends bad requests instead of refusing them
# itself, so the errors below come from our server.
h.set_strict_mode(0)
h.pwrite(b"hello", 4096, nbd.CMD_FLAG_FUA)
assert h.pread(5, 4096) == b"hello"
assert not h.get_structured_replies_negotiated()
try:
    h.pread(4096, `+fmt.Sprint(testSize)+`)
    raise SystemExit("read past end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
try:
    h.pwrite(b"x" * 8, `+fmt.Sprint(testSize-4)+`)
    raise SystemExit("write past end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE)
h.trim(4096, 12288)
h.cache(4096, 0)
h.flush()
assert h.pread(5, 4096) == b"hello"
print("ok")
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	out := runTool(t, []string{"PATH=/usr/bin:" + os.Getenv("PATH")}, "nbdsh",
		"-u", "nbd+unix:///vol0?socket="+addr, "-c", "exec(open("+fmt.Sprintf("%q", script)+").read())")
	if !strings.Contains(out, "ok") {
		t.Fatalf("nbdsh: %s", out)
	}
}

// TestFioVsNbdkit compares IOPS of this server and nbdkit's memory plugin
// under fio in the same run. It is a measurement, not an assertion, and
// runs only with NBD_FIO_COMPARE=1:
//
//	NBD_FIO_COMPARE=1 go test -run TestFioVsNbdkit -v ./nbd/
func TestFioVsNbdkit(t *testing.T) {
	if os.Getenv("NBD_FIO_COMPARE") == "" {
		t.Skip("set NBD_FIO_COMPARE=1 to run")
	}
	fio := needTool(t, "fio")
	nbdkit := needTool(t, "nbdkit")
	runtime := os.Getenv("NBD_FIO_RUNTIME")
	if runtime == "" {
		runtime = "4"
	}
	const size = 256 << 20
	s := newTestServer(t, ServerOptions{}, &Export{Name: "bench", Device: newMemDevice(size)})
	_, tcpAddr := listen(t, s, "tcp")
	_, unixAddr := listen(t, s, "unix")

	kitSock := filepath.Join(t.TempDir(), "nbdkit.sock")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kitPort := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	var kitPIDs []int
	for _, args := range [][]string{{"-f", "-i", "127.0.0.1", "-p", kitPort, "memory", "256M"}, {"-f", "-U", kitSock, "memory", "256M"}} {
		cmd := exec.Command(nbdkit, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kitPIDs = append(kitPIDs, cmd.Process.Pid)
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	// CPU time of a server per I/O depends far less on the load of this
	// shared machine than IOPS do.
	kitCPU := func() time.Duration {
		var total time.Duration
		for _, pid := range kitPIDs {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
			var ut, st int64
			fmt.Sscan(f[11], &ut)
			fmt.Sscan(f[12], &st)
			total += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
		}
		return total
	}
	ourCPU := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	waitFor(t, func() bool {
		c1, err1 := net.Dial("tcp", "127.0.0.1:"+kitPort)
		c2, err2 := net.Dial("unix", kitSock)
		if err1 == nil {
			c1.Close()
		}
		if err2 == nil {
			c2.Close()
		}
		return err1 == nil && err2 == nil
	})

	var iops func(uri, rw string, qd int) float64
	type result struct{ iops, cpuPerIO float64 }
	measure := func(cpu func() time.Duration, uri, rw string, qd int) result {
		before := cpu()
		n := iops(uri, rw, qd)
		used := cpu() - before
		secs, _ := time.ParseDuration(runtime + "s")
		return result{n, float64(used.Microseconds()) / (n * secs.Seconds())}
	}
	iops = func(uri, rw string, qd int) float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, fio, "--name=j", "--ioengine=nbd", "--uri="+uri, "--rw="+rw,
			"--bs=4k", fmt.Sprintf("--iodepth=%d", qd), "--size=256M", "--time_based", "--runtime="+runtime,
			"--output-format=json").Output()
		if err != nil {
			t.Fatalf("fio %s: %v\n%s", uri, err, out)
		}
		var res struct {
			Jobs []struct {
				Read  struct{ IOPS float64 } `json:"read"`
				Write struct{ IOPS float64 } `json:"write"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal(out[bytes.IndexByte(out, '{'):], &res); err != nil {
			t.Fatalf("fio output: %v\n%s", err, out)
		}
		return res.Jobs[0].Read.IOPS + res.Jobs[0].Write.IOPS
	}
	reps := 3
	if v := os.Getenv("NBD_FIO_REPS"); v != "" {
		fmt.Sscan(v, &reps)
	}
	// The machine is shared and noisy: alternate the two servers and
	// report medians of reps short runs.
	median := func(xs []float64) float64 {
		sort.Float64s(xs)
		return xs[len(xs)/2]
	}
	for _, w := range []struct {
		rw string
		qd int
	}{{"randwrite", 1}, {"randwrite", 32}, {"randread", 1}, {"randread", 32}} {
		for _, tr := range []struct{ name, ours, kit string }{
			{"tcp", "nbd://" + tcpAddr + "/bench", "nbd://127.0.0.1:" + kitPort + "/"},
			{"unix", "nbd+unix:///bench?socket=" + unixAddr, "nbd+unix:///?socket=" + kitSock},
		} {
			var kits, ourss, kitCPUs, ourCPUs []float64
			for i := range reps {
				var k, o result
				if i%2 == 0 {
					k = measure(kitCPU, tr.kit, w.rw, w.qd)
					o = measure(ourCPU, tr.ours, w.rw, w.qd)
				} else {
					o = measure(ourCPU, tr.ours, w.rw, w.qd)
					k = measure(kitCPU, tr.kit, w.rw, w.qd)
				}
				kits, ourss = append(kits, k.iops), append(ourss, o.iops)
				kitCPUs, ourCPUs = append(kitCPUs, k.cpuPerIO), append(ourCPUs, o.cpuPerIO)
			}
			kit, ours := median(kits), median(ourss)
			t.Logf("%-9s QD%-2d %-4s  twinblock %7.0f IOPS %5.1f µs CPU/IO   nbdkit %7.0f IOPS %5.1f µs CPU/IO   IOPS ratio %.2f",
				w.rw, w.qd, tr.name, ours, median(ourCPUs), kit, median(kitCPUs), ours/kit)
		}
	}
}

package durable

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

const procStat1 = `cpu  300 0 100 1000 50 0 0 0 0 0
cpu0 200 0 50 400 10 0 0 0 0 0
cpu1 100 0 50 600 40 0 0 0 0 0
intr 12345 0 0
ctxt 999
`

// 100 ticks later on each CPU: cpu0 spent 90 busy, 5 idle, 5 iowait; cpu1
// 10 busy, 30 idle, 60 iowait (guest columns are not added twice).
const procStat2 = `cpu  400 0 200 1035 115 0 0 0 0 0
cpu0 280 0 60 405 15 0 0 0 7 0
cpu1 105 0 55 630 100 0 0 0 0 0
intr 12346 0 0
`

func TestCPUUse(t *testing.T) {
	a, err := parseCPUTimes(bufio.NewScanner(strings.NewReader(procStat1)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseCPUTimes(bufio.NewScanner(strings.NewReader(procStat2)))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("per-CPU lines: %d %d", len(a), len(b))
	}
	u := cpuUse(a, b)
	if u == nil || !near(u.Busy[0], 0.9) || !near(u.IOWait[0], 0.05) || !near(u.Busy[1], 0.1) || !near(u.IOWait[1], 0.6) {
		t.Fatalf("use %+v", u)
	}
	if got := u.String(); got != "cpu0 90% busy (5% iowait), cpu1 10% busy (60% iowait)" {
		t.Errorf("String: %q", got)
	}
	if cpuUse(a, b[:1]) != nil || cpuUse(a, a) != nil {
		t.Error("use from mismatched or identical snapshots")
	}
	if _, err := parseCPUTimes(bufio.NewScanner(strings.NewReader("cpu0 1 2 x 4 5 6\n"))); err == nil {
		t.Error("bad counter accepted")
	}
	if got, err := readCPUTimes(); err != nil || len(got) == 0 {
		t.Errorf("this machine's /proc/stat: %v %v", got, err)
	}
}

const diskstats1 = `   7       0 loop0 10 0 20 0 0 0 0 0 0 4 0 0 0 0 0 0 0
 254       0 vda 537945 58200 14577890 419370 6296395 124878 412838200 4613698 0 381688 5229516 663066 27 257720600 63632 1817822 132815
 254       1 vda1 1 0 8 0 100 0 800 0 0 5 0 0 0 0 0 0 0
`

// 2 s later: 10,000 more writes, 80,000 more sectors (40.96 MB), 1,500 ms
// busy, 4,000 more flushes.
const diskstats2 = ` 254       0 vda 537945 58200 14577890 419370 6306395 124878 412918200 4613698 0 383188 5229516 663066 27 257720600 63632 1821822 132815
`

func TestDiskUse(t *testing.T) {
	a, err := parseDiskstats(bufio.NewScanner(strings.NewReader(diskstats1)), 254, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseDiskstats(bufio.NewScanner(strings.NewReader(diskstats2)), 254, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.name != "vda" || a.writes != 6296395 || a.sectors != 412838200 || a.ioTicks != 381688 || a.flushes != 1817822 {
		t.Fatalf("parsed %+v", a)
	}
	b.at = a.at.Add(2 * time.Second)
	u := diskUse(a, b)
	want := DiskUse{Device: "vda", Util: 0.75, WriteIOPS: 5000, WriteMBps: 20.48, FlushesPS: 2000}
	if u == nil || u.Device != want.Device || !near(u.Util, want.Util) || !near(u.WriteIOPS, want.WriteIOPS) || !near(u.WriteMBps, want.WriteMBps) || !near(u.FlushesPS, want.FlushesPS) {
		t.Fatalf("use %+v, want %+v", u, want)
	}
	if got := u.String(); got != "vda 75% util, 5,000 writes/s, 20.5 MB/s, 2,000 flushes/s" {
		t.Errorf("String: %q", got)
	}
	if diskUse(a, a) != nil {
		t.Error("use over no time")
	}
	if _, err := parseDiskstats(bufio.NewScanner(strings.NewReader(diskstats1)), 8, 0); err == nil {
		t.Error("missing device found")
	}
	if p, err := parseDiskstats(bufio.NewScanner(strings.NewReader(diskstats1)), 254, 1); err != nil || p.name != "vda1" {
		t.Errorf("partition: %+v %v", p, err)
	}
	// This machine: the device under a temporary directory is readable
	// unless it is a filesystem without a block device (tmpfs, overlay).
	if maj, mnr, err := diskOf(t.TempDir()); err != nil {
		t.Errorf("diskOf: %v", err)
	} else if _, err := readDisk(maj, mnr); err != nil {
		t.Logf("no diskstats for %d:%d here: %v", maj, mnr, err)
	}
}

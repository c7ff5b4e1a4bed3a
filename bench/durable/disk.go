package durable

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/bench"
)

// DiskUse is what the block device under the work directory did during a
// sample, from /proc/diskstats. Util near 1.0 means the device always had
// a request outstanding (disk-bound); WriteMBps over the workload's own
// rate shows write amplification (journal + backend + checkpoints).
type DiskUse struct {
	Device    string  `json:"device"`
	Util      float64 `json:"util"`       // fraction of the time with I/O in flight
	WriteIOPS float64 `json:"write_iops"` // write requests completed per second
	WriteMBps float64 `json:"write_mbps"` // 10^6 bytes written per second
	FlushesPS float64 `json:"flushes_per_s,omitempty"`
}

func (d *DiskUse) String() string {
	if d == nil {
		return ""
	}
	s := fmt.Sprintf("%s %.0f%% util, %s writes/s, %.1f MB/s", d.Device, 100*d.Util, bench.FormatCount(d.WriteIOPS), d.WriteMBps)
	if d.FlushesPS > 0 {
		s += fmt.Sprintf(", %s flushes/s", bench.FormatCount(d.FlushesPS))
	}
	return s
}

// diskCounters are one device's /proc/diskstats counters.
type diskCounters struct {
	name                     string
	writes, sectors, ioTicks uint64 // completed writes, sectors written, ms busy
	flushes                  uint64 // completed flushes (kernel 5.5+; 0 before)
	at                       time.Time
}

// diskOf returns the major and minor number of the device holding path.
func diskOf(path string) (major, minor uint32, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(st.Dev), unix.Minor(st.Dev), nil
}

// readDisk reads the /proc/diskstats line of device major:minor.
func readDisk(major, minor uint32) (diskCounters, error) {
	f, err := os.Open("/proc/diskstats")
	if err != nil {
		return diskCounters{}, err
	}
	defer f.Close()
	return parseDiskstats(bufio.NewScanner(f), major, minor)
}

func parseDiskstats(sc *bufio.Scanner, major, minor uint32) (diskCounters, error) {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 14 || f[0] != strconv.FormatUint(uint64(major), 10) || f[1] != strconv.FormatUint(uint64(minor), 10) {
			continue
		}
		num := func(i int) (uint64, error) { return strconv.ParseUint(f[i], 10, 64) }
		c := diskCounters{name: f[2], at: time.Now()}
		var err error
		for _, p := range []struct {
			i   int
			dst *uint64
		}{{7, &c.writes}, {9, &c.sectors}, {12, &c.ioTicks}} {
			if *p.dst, err = num(p.i); err != nil {
				return diskCounters{}, fmt.Errorf("/proc/diskstats: %q: %w", sc.Text(), err)
			}
		}
		if len(f) >= 19 {
			c.flushes, _ = num(18)
		}
		return c, nil
	}
	if err := sc.Err(); err != nil {
		return diskCounters{}, err
	}
	return diskCounters{}, fmt.Errorf("/proc/diskstats: no device %d:%d", major, minor)
}

// diskUse turns two readings into rates; nil when no time passed or the
// readings are of different devices.
func diskUse(a, b diskCounters) *DiskUse {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 || a.name != b.name || a.name == "" {
		return nil
	}
	return &DiskUse{
		Device:    a.name,
		Util:      min(1, float64(b.ioTicks-a.ioTicks)/1000/dt),
		WriteIOPS: float64(b.writes-a.writes) / dt,
		// diskstats counts 512-byte sectors whatever the device's sector size.
		WriteMBps: float64(b.sectors-a.sectors) * 512 / 1e6 / dt,
		FlushesPS: float64(b.flushes-a.flushes) / dt,
	}
}

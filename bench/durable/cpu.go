package durable

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUUse is how busy each CPU was during a sample, from /proc/stat: the
// fraction of the sample's time spent not idle (user, system, irq, ...),
// and the fraction in iowait (idle with a disk request outstanding). A
// CPU near 1.0 busy means the row was CPU-bound there; high iowait with
// idle CPUs means waiting for the disk.
type CPUUse struct {
	Busy   []float64 `json:"busy"`   // per CPU, in /proc/stat order
	IOWait []float64 `json:"iowait"` // per CPU
}

// String renders "cpu0 97% busy (2% iowait), cpu1 …".
func (c *CPUUse) String() string {
	if c == nil {
		return ""
	}
	var parts []string
	for i := range c.Busy {
		parts = append(parts, fmt.Sprintf("cpu%d %.0f%% busy (%.0f%% iowait)", i, 100*c.Busy[i], 100*c.IOWait[i]))
	}
	return strings.Join(parts, ", ")
}

// cpuTimes are one CPU's /proc/stat counters, in clock ticks.
type cpuTimes struct {
	total, idle, iowait uint64
}

// readCPUTimes reads the per-CPU lines ("cpu0 ...") of /proc/stat.
func readCPUTimes() ([]cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseCPUTimes(bufio.NewScanner(f))
}

func parseCPUTimes(sc *bufio.Scanner) ([]cpuTimes, error) {
	var out []cpuTimes
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[0], "cpu") || fields[0] == "cpu" {
			continue
		}
		var t cpuTimes
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is already counted in user, so stop at steal.
		for i, s := range fields[1:min(len(fields), 9)] {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat: %q: %w", sc.Text(), err)
			}
			t.total += v
			switch i {
			case 3:
				t.idle = v
			case 4:
				t.iowait = v
			}
		}
		out = append(out, t)
	}
	return out, sc.Err()
}

// cpuUse turns two snapshots into per-CPU fractions; nil when they do not
// match (a CPU came or went) or no time passed.
func cpuUse(before, after []cpuTimes) *CPUUse {
	if len(before) == 0 || len(before) != len(after) {
		return nil
	}
	u := &CPUUse{}
	for i := range before {
		dt := float64(after[i].total - before[i].total)
		if dt <= 0 {
			return nil
		}
		idle := float64(after[i].idle - before[i].idle)
		iow := float64(after[i].iowait - before[i].iowait)
		u.Busy = append(u.Busy, max(0, 1-(idle+iow)/dt))
		u.IOWait = append(u.IOWait, iow/dt)
	}
	return u
}

package resync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// dropCachesPath is the kernel's knob; a variable so tests can point it
// elsewhere.
var dropCachesPath = "/proc/sys/vm/drop_caches"

// dropCaches writes back dirty pages (sync) and drops the clean page
// cache, dentries and inodes, so the next read of an image comes from the
// disk. It affects the whole machine.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile(dropCachesPath, []byte("3\n"), 0); err != nil {
		return fmt.Errorf("%w: %w (run as root, or use the warm cache mode)", ErrDropCaches, err)
	}
	return nil
}

// alignedBuf returns n bytes aligned to 4 KiB, as O_DIRECT wants.
func alignedBuf(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n]
}

// readOnce reads path from start to end in ioSize requests, depth of
// them in flight (1: one after the other, sequentially), with O_DIRECT
// (bypassing the page cache) or through it, and returns how long that took
// and the bytes read.
func readOnce(ctx context.Context, path string, direct bool, depth int) (time.Duration, int64, error) {
	flags := os.O_RDONLY
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	depth = max(depth, 1)
	var (
		next  atomic.Int64 // the next request's offset
		total atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		errs  []error
	)
	start := time.Now()
	for range depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := alignedBuf(ioSize)
			for {
				if err := ctx.Err(); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
					return
				}
				off := next.Add(ioSize) - ioSize
				if off >= size {
					return
				}
				n, err := f.ReadAt(buf[:min(int64(ioSize), size-off)], off)
				total.Add(int64(n))
				if err != nil && !errors.Is(err, io.EOF) {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("reading %s at %d: %w", path, off, err))
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, total.Load(), err
	}
	if total.Load() != size {
		return 0, total.Load(), fmt.Errorf("reading %s: %d of %d bytes", path, total.Load(), size)
	}
	return d, size, nil
}

// readTogether reads every path at once through the page cache, one
// goroutine each, and returns the time until the last one is through.
func readTogether(ctx context.Context, paths ...string) (time.Duration, int64, error) {
	type res struct {
		n   int64
		err error
	}
	out := make(chan res, len(paths))
	start := time.Now()
	for _, p := range paths {
		go func() {
			_, n, err := readOnce(ctx, p, false, 1)
			out <- res{n, err}
		}()
	}
	var total int64
	var errs []error
	for range paths {
		r := <-out
		total += r.n
		errs = append(errs, r.err)
	}
	return time.Since(start), total, errors.Join(errs...)
}

// cpuSnapshot is the machine-wide /proc/stat "cpu" line: busy (everything
// but idle and iowait) and total clock ticks.
type cpuSnapshot struct{ busy, total uint64 }

func readCPU() (cpuSnapshot, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuSnapshot{}, err
	}
	defer f.Close()
	return parseCPU(bufio.NewScanner(f))
}

// parseCPU reads the aggregate "cpu " line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest time is inside user).
func parseCPU(sc *bufio.Scanner) (cpuSnapshot, error) {
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[0] != "cpu" {
			continue
		}
		var s cpuSnapshot
		for i, v := range fields[1:min(len(fields), 9)] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return cpuSnapshot{}, fmt.Errorf("/proc/stat: %q: %w", sc.Text(), err)
			}
			s.total += n
			if i != 3 && i != 4 {
				s.busy += n
			}
		}
		return s, nil
	}
	if err := sc.Err(); err != nil {
		return cpuSnapshot{}, err
	}
	return cpuSnapshot{}, errors.New("/proc/stat: no cpu line")
}

// cpuBusy is the share of all CPUs' time spent busy between a and b; -1
// when unknown.
func cpuBusy(a, b cpuSnapshot) float64 {
	if b.total <= a.total || b.busy < a.busy {
		return -1
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

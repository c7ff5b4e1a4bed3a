// Package ackload is a verified write load: it writes self-describing blocks
// to a block device, records which writes were acknowledged, and later
// checks that every acknowledged write is still there.
//
// It is the oracle of the crash tests: run a load against a server, kill the
// server (or the node) at a random point, bring the data up again (restart,
// promote the peer) and Verify. The rule checked per block is strict:
//
//	the block holds the last acknowledged version of it, or the version
//	that was in flight after it (its outcome is unknown), and nothing else.
//
// To make that rule exact, blocks are partitioned between workers, so one
// block never has two writes in flight at once. Every block's content is a
// pure function of (seed, block, version): the log stores versions only and
// the data is regenerated for checking; a 16-byte header at the start of the
// block (magic, block, version) tells which version is on disk, and an
// xxhash64 over the rest tells whether it is intact.
package ackload

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Device is what the load writes to and verifies against (the nbd client
// satisfies it).
type Device interface {
	WriteAt(p []byte, off uint64, fua bool) error
	ReadAt(p []byte, off uint64) error
}

// Options bound the load in count and time.
type Options struct {
	BlockSize int           // bytes per block, >= 64 (default 4096)
	Blocks    int           // distinct blocks used, from offset Base (default 4096)
	Base      uint64        // byte offset of block 0
	Workers   int           // concurrent writers (default 16)
	MaxOps    int           // stop after this many writes in all (default 100000)
	Duration  time.Duration // stop after this long (default 10s)
	Seed      uint64
	FUA       bool
}

func (o *Options) defaults() {
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.Blocks == 0 {
		o.Blocks = 4096
	}
	if o.Workers == 0 {
		o.Workers = 16
	}
	if o.Workers > o.Blocks {
		o.Workers = o.Blocks
	}
	if o.MaxOps == 0 {
		o.MaxOps = 100000
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
}

// ErrLost is wrapped by Verify when an acknowledged write is missing.
var ErrLost = errors.New("ackload: acknowledged write lost")

const magic = 0x544241434b4c4f44 // "TBACKLOD"

// Block is the log entry of one block.
type Block struct {
	Acked    uint64 `json:"a,omitempty"` // last acknowledged version (0: none)
	InFlight uint64 `json:"f,omitempty"` // version sent but not acknowledged
}

// Log records what was acknowledged. It is safe for concurrent use and can
// be saved and loaded (JSON) to check from another process.
type Log struct {
	Opts   Options `json:"opts"`
	Blocks []Block `json:"blocks"`
	Acked  int64   `json:"acked"`
	mu     sync.Mutex
}

// Run writes until MaxOps, Duration, ctx, or the first write error (the
// server went away), and returns the log. A write error is not an error of
// Run: it is what a crash test expects; the log says what was acknowledged.
func Run(ctx context.Context, dev Device, opts Options) (*Log, error) {
	opts.defaults()
	if opts.BlockSize < 64 {
		return nil, fmt.Errorf("ackload: block size %d < 64", opts.BlockSize)
	}
	l := &Log{Opts: opts, Blocks: make([]Block, opts.Blocks)}
	ctx, cancel := context.WithTimeout(ctx, opts.Duration)
	defer cancel()
	var ops atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < opts.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(opts.Seed, uint64(w)))
			buf := make([]byte, opts.BlockSize)
			owned := (opts.Blocks - w + opts.Workers - 1) / opts.Workers
			for ctx.Err() == nil && ops.Add(1) <= int64(opts.MaxOps) {
				b := w + opts.Workers*rng.IntN(owned)
				l.mu.Lock()
				v := l.Blocks[b].Acked + 1
				if f := l.Blocks[b].InFlight; f >= v {
					v = f + 1
				}
				l.Blocks[b].InFlight = v
				l.mu.Unlock()
				Fill(buf, opts.Seed, uint64(b), v)
				if err := dev.WriteAt(buf, opts.Base+uint64(b)*uint64(opts.BlockSize), opts.FUA); err != nil {
					cancel() // outcome unknown: leave InFlight set and stop everyone
					return
				}
				l.mu.Lock()
				l.Blocks[b].Acked = v
				l.Blocks[b].InFlight = 0
				l.Acked++
				l.mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return l, nil
}

// Fill writes version v of block b into buf.
func Fill(buf []byte, seed, b, v uint64) {
	binary.LittleEndian.PutUint64(buf[0:], magic)
	binary.LittleEndian.PutUint64(buf[8:], b)
	binary.LittleEndian.PutUint64(buf[16:], v)
	r := rand.New(rand.NewPCG(seed^b*0x9e3779b97f4a7c15, v))
	body := buf[32:]
	for i := 0; i+8 <= len(body); i += 8 {
		binary.LittleEndian.PutUint64(body[i:], r.Uint64())
	}
	binary.LittleEndian.PutUint64(buf[24:], xxhash.Sum64(body))
}

// decode returns the version a block holds, 0 for an all-zero block, or an
// error for anything that is neither intact nor zero.
func decode(buf []byte, b uint64) (uint64, error) {
	if binary.LittleEndian.Uint64(buf[0:]) != magic {
		for _, c := range buf {
			if c != 0 {
				return 0, fmt.Errorf("block %d: garbage (bad magic)", b)
			}
		}
		return 0, nil
	}
	if got := binary.LittleEndian.Uint64(buf[8:]); got != b {
		return 0, fmt.Errorf("block %d: holds block %d's data (misdirected write)", b, got)
	}
	if xxhash.Sum64(buf[32:]) != binary.LittleEndian.Uint64(buf[24:]) {
		return 0, fmt.Errorf("block %d: torn or corrupt (checksum)", b)
	}
	return binary.LittleEndian.Uint64(buf[16:]), nil
}

// Result summarises a Verify.
type Result struct {
	Checked    int // blocks that were ever written
	Acked      int // of those, blocks with an acknowledged version
	InFlightOK int // blocks holding the in-flight (unacknowledged) version
	Problems   []string
}

// Verify reads every block the log touched and checks the rule in the
// package comment. It returns an error wrapping ErrLost if any
// acknowledged write is missing or any block is corrupt.
func (l *Log) Verify(dev Device) (Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var r Result
	buf := make([]byte, l.Opts.BlockSize)
	for i, st := range l.Blocks {
		if st.Acked == 0 && st.InFlight == 0 {
			continue
		}
		r.Checked++
		if st.Acked > 0 {
			r.Acked++
		}
		if err := dev.ReadAt(buf, l.Opts.Base+uint64(i)*uint64(l.Opts.BlockSize)); err != nil {
			return r, fmt.Errorf("ackload: read block %d: %w", i, err)
		}
		v, err := decode(buf, uint64(i))
		switch {
		case err != nil:
			r.Problems = append(r.Problems, err.Error())
		case v == st.Acked:
		case st.InFlight != 0 && v == st.InFlight:
			r.InFlightOK++
		default:
			r.Problems = append(r.Problems, fmt.Sprintf("block %d: holds version %d, acknowledged %d, in flight %d", i, v, st.Acked, st.InFlight))
		}
	}
	if len(r.Problems) > 0 {
		n := len(r.Problems)
		show := r.Problems
		if len(show) > 10 {
			show = show[:10]
		}
		return r, fmt.Errorf("%w: %d of %d blocks wrong, e.g. %v", ErrLost, n, r.Checked, show)
	}
	return r, nil
}

// Save writes the log as JSON.
func (l *Log) Save(w io.Writer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return json.NewEncoder(w).Encode(l)
}

// Load reads a log written by Save.
func Load(r io.Reader) (*Log, error) {
	var l Log
	if err := json.NewDecoder(r).Decode(&l); err != nil {
		return nil, fmt.Errorf("ackload: load log: %w", err)
	}
	l.Opts.defaults()
	if len(l.Blocks) != l.Opts.Blocks || l.Opts.BlockSize < 64 {
		return nil, fmt.Errorf("ackload: load log: inconsistent (blocks %d of %d, block size %d)", len(l.Blocks), l.Opts.Blocks, l.Opts.BlockSize)
	}
	return &l, nil
}

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/nbd"
)

// killPoints is how many kill -9 points TestKill9DuringWriteLoad tries
// (TWINBLOCK_KILL_POINTS raises it for a longer run).
func killPoints() int {
	if n, err := strconv.Atoi(os.Getenv("TWINBLOCK_KILL_POINTS")); err == nil && n > 0 {
		return n
	}
	return 6
}

// kill -9 the real daemon in the middle of a write load from a real NBD
// client; restart it; every write the client got an acknowledgement for is
// there (the journal replays what the backend had not received yet).
func TestKill9DuringWriteLoad(t *testing.T) {
	dir := t.TempDir()
	// Each kill point writes its own 32 MiB region, so a block never
	// carries data from an earlier point's run.
	size := fmt.Sprintf("%dM", 32*killPoints())
	if r := tb(t, dir, "create", "vol0", "--path", "vol0.img", "--size", size); r.err != nil {
		t.Fatalf("create: %s", r)
	}
	cfg := filepath.Join(dir, "twinblock.yaml")

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	seed := rng.Uint64()
	t.Logf("seed %d", seed)
	for point := 0; point < killPoints(); point++ {
		s := startServer(t, serveOptions{args: []string{"--config", cfg}})
		c := dialNBD(t, s.addr, "vol0")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var log *ackload.Log
		done := make(chan struct{})
		go func() {
			defer close(done)
			log, _ = ackload.Run(ctx, c, ackload.Options{
				BlockSize: 4096, Blocks: 8192, Workers: 32, MaxOps: 1 << 30,
				Duration: 20 * time.Second, Seed: seed + uint64(point), Base: uint64(point) * 32 << 20,
			})
		}()
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		s.Signal(syscall.SIGKILL)
		<-done
		cancel()
		c.Close()
		s.Wait()
		if log.Acked == 0 {
			t.Fatalf("kill point %d: no write was acknowledged before the kill", point)
		}

		s2 := startServer(t, serveOptions{args: []string{"--config", cfg}})
		c2 := dialNBD(t, s2.addr, "vol0")
		res, err := log.Verify(c2)
		if err != nil {
			t.Fatalf("kill point %d: %v\nserver log after restart:\n%s", point, err, s2.Log())
		}
		t.Logf("kill point %d: %d writes acknowledged, %d blocks checked, %d held the in-flight version",
			point, log.Acked, res.Checked, res.InFlightOK)
		c2.Close()
		s2.Stop()
	}
}

func dialNBD(t *testing.T, addr, export string) *nbd.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", addr, nbd.ClientOptions{ExportName: export})
	if err != nil {
		t.Fatalf("nbd dial %s: %v", addr, err)
	}
	return c
}

package nbd

import (
	"bytes"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// dribbleConn delivers every write in small pieces with pauses, so a large
// payload reaches the server in many segments and its reader has to wait
// in the poller for the rest several times.
type dribbleConn struct {
	net.Conn
	piece int
}

func (d dribbleConn) Write(p []byte) (int, error) {
	n := 0
	for i := 0; len(p) > 0; i++ {
		m := min(len(p), d.piece)
		k, err := d.Conn.Write(p[:m])
		n += k
		if err != nil {
			return n, err
		}
		p = p[m:]
		if i%16 == 15 {
			time.Sleep(time.Millisecond)
		}
	}
	return n, nil
}

// TestLargeWritesOverTCP sends payloads larger than the read buffer over
// TCP (read with raw system calls, straight into the request's buffer), at
// once and in dribbles, several in flight, and checks the data and that
// the small requests that follow get answered.
func TestLargeWritesOverTCP(t *testing.T) {
	const size = 16 << 20
	dev := newMemDevice(size)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	network, addr := listen(t, s, "tcp")
	for _, dribble := range []bool{false, true} {
		nc, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		var conn net.Conn = nc
		if dribble {
			conn = dribbleConn{Conn: nc, piece: 7 << 10}
		}
		c, err := NewClient(testCtx(t), conn, ClientOptions{ExportName: "vol0"})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		sizes := []int{128<<10 + 1, 1 << 20, 3<<20 + 513, 4 << 20}
		want := make([][]byte, len(sizes))
		var wg sync.WaitGroup
		errs := make(chan error, len(sizes))
		for i, n := range sizes {
			want[i] = make([]byte, n)
			for j := range want[i] {
				want[i][j] = byte(rng.Uint32())
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- c.WriteAt(want[i], uint64(i)*(4<<20), false)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, n := range sizes {
			got := make([]byte, n)
			if err := c.ReadAt(got, uint64(i)*(4<<20)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[i]) {
				t.Fatalf("dribble=%v: payload %d (%d bytes) reads back different", dribble, i, n)
			}
			// A large write followed by a lone small request.
			if err := c.WriteAt(want[i], uint64(i)*(4<<20), false); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
}

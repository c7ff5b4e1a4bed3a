package transport

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkRecords4K pushes 4 KiB write records through a real loopback
// link (TLS 1.3 or plain TCP) with the receiver acking the last one:
// records/s and MB/s of the pipelined path, handshake excluded.
//
//	go test -run '^$' -bench Records4K -benchtime 100000x ./transport/
func BenchmarkRecords4K(b *testing.B) {
	random := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	text := bytes.Repeat([]byte("compressible guest data "), 171)[:4096]
	cases := []struct {
		name   string
		tls    bool
		data   []byte
		codecs []Codec
	}{
		{"plain/random/nocomp", false, random, nil},
		{"tls/random/nocomp", true, random, nil},
		{"tls/random/s2", true, random, []Codec{CodecS2}},
		{"tls/text/s2", true, text, []Codec{CodecS2}},
		{"tls/text/zstd", true, text, []Codec{CodecZstd}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := getPKI(b)
			lo := insecureOpts("b", "a", RoleSecondary)
			do := insecureOpts("a", "b", RolePrimary)
			if c.tls {
				lo = tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)
				do = tlsOpts(p.ca, p.a, "a", "b", RolePrimary)
			}
			for _, o := range []*ConnOptions{&lo, &do} {
				o.Codecs, o.NoCompression = c.codecs, c.codecs == nil
			}
			l, err := Listen("127.0.0.1:0", ListenOptions{ConnOptions: lo})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			accepted := make(chan *Conn, 1)
			go func() {
				c, err := l.Accept(b.Context())
				if err == nil {
					accepted <- c
				}
			}()
			ca, _, err := Dial(b.Context(), DialOptions{Addr: l.Addr().String(), ConnOptions: do})
			if err != nil {
				b.Fatal(err)
			}
			defer ca.Close()
			var cb *Conn
			select {
			case cb = <-accepted:
			case <-time.After(10 * time.Second):
				b.Fatal("accept timeout")
			}
			defer cb.Close()
			n := b.N
			go func() {
				for i := 0; i < n; i++ {
					f, err := cb.Recv()
					if err != nil {
						return
					}
					if rec := f.(Record); rec.Seq == uint64(n) {
						cb.Send(Ack{ReceivedSeq: rec.Seq, DurableSeq: rec.Seq})
					}
				}
			}()
			b.SetBytes(int64(len(c.data)))
			b.ResetTimer()
			start := time.Now()
			for i := 1; i <= n; i++ {
				if err := ca.Send(Record{Seq: uint64(i), Kind: KindWrite, Offset: uint64(i) * 4096, Length: 4096, Data: c.data}); err != nil {
					b.Fatal(err)
				}
			}
			f, err := ca.Recv()
			if err != nil || f.(Ack).DurableSeq != uint64(n) {
				b.Fatalf("final ack: %v %v", f, err)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
			st := ca.Stats()
			b.ReportMetric(float64(st.BytesSent)/float64(st.PayloadBytesSent), "wire/payload")
		})
	}
}

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/twinblock/twinblock/bench/proxy"
	"github.com/twinblock/twinblock/engine"
)

// The resync tests (issue 5) run two real daemons created over existing
// files (`twinblock create --existing`) that hold different data, with the
// bench/proxy between them so that every byte of the peer link is counted,
// and check the promises of the checksummed resync and of online verify:
// the initial sync makes the copies identical while sending little more
// than the 4 KiB blocks that differ; an outage past the journal bound
// heals with a dirty-region resync whose wire bytes stay within 2× the
// bytes that changed; an interrupted resync resumes instead of starting
// over; verify finds a block corrupted behind the engine's back, repairs
// it on request, and reports nothing false while writes run.

const (
	resyncVolSize = 64 << 20
	resyncChunk   = 64 << 10
	fine          = 4 << 10
)

// resyncOverhead is what the link may carry beyond the differing blocks
// themselves for a pass over size bytes: TLS and the peer handshake,
// heartbeats, hash requests and hash lists (8 bytes per 64 KiB chunk,
// plus 16 per 4 KiB block of a differing chunk), frame headers.
func resyncOverhead(size int64) int64 { return 128<<10 + size/1024 }

// existingPair builds a pair like newPair, but over existing files: fill
// writes a's and b's images, then both are created with --existing (a as
// primary, b as secondary with a's uuid, so b starts Inconsistent and gets
// a full checksummed resync when they first connect). a dials b through a
// counting proxy. edit, if set, changes a node's config file before it
// starts (e.g. replication.retain, resync.rate).
func existingPair(t *testing.T, certs string, fill func(aImg, bImg string), edit func(node string, cfg map[string]any)) *pair {
	t.Helper()
	if certs == "" {
		certs = makeCerts(t)
	}
	p := newPairNodes(t)
	fill(p.a.img, p.b.img)

	px, err := proxy.Start(proxy.Options{Listen: "127.0.0.1:0", Target: p.b.repl})
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(func() { _ = px.Close() })
	p.proxy = px

	create := func(n *pairNode, peer, peerAddr string, extra ...string) string {
		return n.create(peer, peerAddr, certs, append([]string{"--existing"}, extra...)...)
	}
	p.uuid = create(p.a, "b", px.Addr())
	if u := create(p.b, "a", p.a.repl, "--uuid", p.uuid); u != p.uuid {
		t.Fatalf("b created with uuid %s, want a's %s", u, p.uuid)
	}
	if edit != nil {
		for _, n := range []*pairNode{p.a, p.b} {
			editConfig(t, n.cfg, func(m map[string]any) { edit(n.name, m) })
		}
	}
	return p
}

// editConfig rewrites a YAML config file through a generic map.
func editConfig(t *testing.T, path string, f func(map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(readFile(t, path), &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	f(m)
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, out)
}

// setVolumeKey sets key of the (only) volume in a config map.
func setVolumeKey(t *testing.T, m map[string]any, key string, val any) {
	t.Helper()
	vols, ok := m["volumes"].([]any)
	if !ok || len(vols) != 1 {
		t.Fatalf("config: want one volume, got %#v", m["volumes"])
	}
	vols[0].(map[string]any)[key] = val
}

// setReplicationKey sets key of the replication section.
func setReplicationKey(t *testing.T, m map[string]any, key string, val any) {
	t.Helper()
	r, ok := m["replication"].(map[string]any)
	if !ok {
		t.Fatalf("config: no replication section: %#v", m)
	}
	r[key] = val
}

// mutateChunks copies src to dst and overwrites, in about frac of the
// 64 KiB chunks (at least one), a random run of 4 KiB blocks (1 to 16) with
// random data. It returns the chunks touched.
func mutateChunks(t *testing.T, src, dst string, frac float64, seed uint64) int {
	t.Helper()
	data := readFile(t, src)
	r := rand.New(rand.NewPCG(seed, 0x5e5))
	chunks := len(data) / resyncChunk
	want := max(1, int(frac*float64(chunks)+0.5))
	picked := map[int]bool{}
	for len(picked) < want {
		picked[r.IntN(chunks)] = true
	}
	for c := range picked {
		blocks := 1 + r.IntN(resyncChunk/fine)
		first := r.IntN(resyncChunk/fine - blocks + 1)
		off := c*resyncChunk + first*fine
		copy(data[off:off+blocks*fine], randomBytes(blocks*fine, r.Uint64()))
	}
	writeFile(t, dst, data)
	return want
}

// diffBytes compares two images in 4 KiB blocks and returns the bytes of
// the blocks that differ.
func diffBytes(t *testing.T, a, b string) int64 {
	t.Helper()
	var n int64
	walkImages(t, a, b, func(_ int64, pa, pb []byte) {
		for off := 0; off < len(pa); off += fine {
			e := min(off+fine, len(pa))
			if !bytes.Equal(pa[off:e], pb[off:e]) {
				n += int64(e - off)
			}
		}
	})
	return n
}

// wireBytes is what crossed the proxy in both directions.
func wireBytes(p *proxy.Proxy) int64 {
	st := p.Stats()
	return st.BytesToTarget + st.BytesToClient
}

// waitResynced waits until a's resync pass newer than afterID is over and
// the peer is Connected, UpToDate and owes nothing, and b agrees.
func (p *pair) waitResynced(afterID uint64, within time.Duration) engine.Status {
	p.t.Helper()
	st := p.a.waitForWithin(within, fmt.Sprintf("resync (pass > %d) done, peer UpToDate", afterID), func(s engine.Status) bool {
		return s.Resync != nil && s.Resync.ID > afterID && !s.Resync.Running && s.Resync.Error == "" &&
			s.Conn == engine.ConnConnected && s.PeerDisk == engine.DiskUpToDate && s.ResyncPendingBytes == 0
	})
	p.b.waitFor("b UpToDate and Connected", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.Disk == engine.DiskUpToDate
	})
	p.requireMapSaved()
	return st
}

// requireMapSaved fails when the primary logged a failed save of its
// dirty-region map. Two saves at once (the once-a-second progress save,
// a checkpoint's, the end of a pass) share one temporary file name, so
// one rename finds nothing to rename; the pass then ends in an error and
// is redone in full, and an older map can replace a newer one.
func (p *pair) requireMapSaved() {
	p.t.Helper()
	for _, line := range strings.Split(p.a.Log(), "\n") {
		if strings.Contains(line, "saving dirty map") {
			p.t.Errorf("engine bug: the primary failed to save its dirty-region map:\n%s", line)
		}
	}
}

// requireIdentical stops both nodes (primary last synced) and compares
// the images byte for byte.
func (p *pair) requireIdentical() string {
	p.t.Helper()
	shaA, shaB := p.stopSynced(p.a, p.b)
	if shaA != shaB {
		requireSameImages(p.t, p.a.img, p.b.img)
		p.t.Fatalf("images differ: sha256 a %s, b %s", shaA, shaB)
	}
	return shaA
}

// a. Initial sync of a secondary created over data that differs: (1) in
// about 1% of its 64 KiB chunks, (2) everywhere. The sync starts by itself,
// the images end identical, status's sent_bytes is exactly the differing
// 4 KiB blocks, and the proxy saw at most 2× that plus a small overhead.
func TestResyncInitialSync(t *testing.T) {
	seed := testSeed(t)
	certs := makeCerts(t)
	for _, tc := range []struct {
		name string
		frac float64 // of chunks changed; 0: every byte differs
	}{{"one-percent", 0.01}, {"all-different", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			p := existingPair(t, certs, func(aImg, bImg string) {
				writeFile(t, aImg, randomBytes(resyncVolSize, seed))
				if tc.frac == 0 {
					writeFile(t, bImg, randomBytes(resyncVolSize, seed+1))
					return
				}
				n := mutateChunks(t, aImg, bImg, tc.frac, seed)
				t.Logf("%d of %d chunks changed on b", n, resyncVolSize/resyncChunk)
			}, nil)
			differ := diffBytes(t, p.a.img, p.b.img)
			if differ == 0 {
				t.Fatal("the images do not differ")
			}
			aSHA := fileSHA(t, p.a.img)
			p.start()
			st := p.waitResynced(0, waitTimeout)
			pr := st.Resync
			wire := wireBytes(p.proxy)
			t.Logf("differing %d bytes; resync: total %d, compared %d, sent %d in %.2fs; wire %d bytes (%.2f× differing); link_bytes_sent %d",
				differ, pr.TotalBytes, pr.DoneBytes, pr.SentBytes, pr.Elapsed, wire, float64(wire)/float64(differ), st.LinkBytesSent)
			if !pr.Full || pr.TotalBytes != resyncVolSize || pr.DoneBytes != resyncVolSize {
				t.Errorf("initial sync: want a full pass over %d bytes, got %+v", resyncVolSize, pr)
			}
			if int64(pr.SentBytes) != differ {
				t.Errorf("sent_bytes %d, want exactly the %d bytes of differing 4 KiB blocks", pr.SentBytes, differ)
			}
			if limit := 2*differ + resyncOverhead(resyncVolSize); wire > limit {
				t.Errorf("%d bytes crossed the link, more than 2 × %d differing + %d overhead = %d", wire, differ, resyncOverhead(resyncVolSize), limit)
			}
			// Both hold the primary's data: the resync went one way only.
			if sha := p.requireIdentical(); sha != aSHA {
				t.Fatalf("the primary's image changed: sha256 %s, was %s", sha, aSHA)
			}
		})
	}
}

// b. An outage longer than the journal keeps (replication.retain 16M)
// during a write load through NBD: the primary marks dirty regions, status
// says NeedsResync with resync_pending_bytes > 0; after the link returns a
// dirty-region resync (not a full pass) heals the secondary with at most
// 2× the bytes that actually changed on the wire.
func TestResyncPastJournalBound(t *testing.T) {
	seed := testSeed(t)
	const retain = 16 << 20
	p := existingPair(t, "", func(aImg, bImg string) {
		d := randomBytes(resyncVolSize, seed)
		writeFile(t, aImg, d)
		writeFile(t, bImg, d)
	}, func(node string, m map[string]any) {
		setReplicationKey(t, m, "retain", "16M")
	})
	p.start()
	p.waitResynced(0, waitTimeout) // identical files: the initial pass sends nothing

	c := p.a.dial()
	// The load: 4 KiB writes over 8 MiB at 16 MiB, bounded in time; the
	// link is cut after it started.
	o := loadOptions(seed, 16<<20, 2048, 16, 20*time.Second)
	o.MaxOps = 3 * retain / fine // 48 MiB of writes: past the bound
	_, wait := startLoad(c, o)
	time.Sleep(300 * time.Millisecond)
	p.proxy.Cut()
	cut := p.a.waitFor("link down", func(s engine.Status) bool { return s.Conn != engine.ConnConnected })
	need := p.a.waitFor("NeedsResync with pending regions", func(s engine.Status) bool {
		return s.Conn == engine.ConnNeedsResync && s.ResyncPendingBytes > 0
	})
	log, err := wait()
	if err != nil {
		t.Fatalf("write load across the outage: %v", err)
	}
	if log.Acked < int64(o.MaxOps)/2 {
		t.Fatalf("only %d writes acknowledged", log.Acked)
	}
	c.Close()
	// The load is stopped: let both sides apply what they have, then
	// count the 4 KiB blocks that differ between the images.
	end := p.a.waitFor("primary applied every record, still NeedsResync", func(s engine.Status) bool {
		return s.AppliedSeq == s.LastSeq && s.InFlight == 0 && s.Conn == engine.ConnNeedsResync
	})
	p.b.waitFor("secondary applied what it received", func(s engine.Status) bool { return s.AppliedSeq == s.LastSeq })
	changed := diffBytes(t, p.a.img, p.b.img)
	if changed == 0 {
		t.Fatal("nothing differs between the images after the outage")
	}
	t.Logf("cut at seq %d, NeedsResync at seq %d (pending %d), load ended at seq %d after %d writes; %d bytes differ, %d pending",
		cut.LastSeq, need.LastSeq, need.ResyncPendingBytes, end.LastSeq, log.Acked, changed, end.ResyncPendingBytes)
	if end.ResyncPendingBytes >= resyncVolSize {
		t.Fatalf("the whole volume is marked (%d bytes): want only the regions written", end.ResyncPendingBytes)
	}
	var lastID uint64
	if end.Resync != nil {
		lastID = end.Resync.ID
	}

	before := wireBytes(p.proxy)
	p.proxy.Restore()
	st := p.waitResynced(lastID, waitTimeout)
	wire := wireBytes(p.proxy) - before
	pr := st.Resync
	t.Logf("dirty-region resync: total %d, sent %d in %.2fs; wire %d bytes (%.2f× changed)",
		pr.TotalBytes, pr.SentBytes, pr.Elapsed, wire, float64(wire)/float64(changed))
	if pr.Full || pr.TotalBytes != end.ResyncPendingBytes {
		t.Errorf("want a dirty-region pass over the %d pending bytes, got %+v", end.ResyncPendingBytes, pr)
	}
	if int64(pr.SentBytes) != changed {
		t.Errorf("sent_bytes %d, want the %d bytes that differ", pr.SentBytes, changed)
	}
	if wire > 2*changed+resyncOverhead(int64(pr.TotalBytes)) {
		t.Errorf("%d bytes on the wire, more than 2 × %d changed + overhead", wire, changed)
	}
	// Every acknowledged write is on a; b's image is compared below.
	c2 := p.a.dial()
	verifyOn(t, p.a, c2, log, "after the resync")
	c2.Close()
	p.requireIdentical()
}

// c. A rate-limited initial sync of a wholly different secondary is
// interrupted halfway by kill -9 of the secondary, or of the primary (whose
// dirty-region map then comes back from disk); once the node is restarted
// the pass resumes: the second pass covers less than the volume, and all
// passes together send well under two volumes.
func TestResyncResumeAfterKill(t *testing.T) {
	seed := testSeed(t)
	certs := makeCerts(t)
	for _, victim := range []string{"secondary", "primary"} {
		t.Run("kill-"+victim, func(t *testing.T) {
			p := existingPair(t, certs, func(aImg, bImg string) {
				writeFile(t, aImg, randomBytes(resyncVolSize, seed))
				writeFile(t, bImg, randomBytes(resyncVolSize, ^seed))
			}, func(node string, m map[string]any) {
				if node == "a" {
					// 64 MiB at 12 MiB/s after a second's burst: about 4.4 s.
					setVolumeKey(t, m, "resync", map[string]any{"rate": "12M"})
				}
			})
			p.start()
			first := p.a.waitFor("first pass 40% done", func(s engine.Status) bool {
				return s.Resync != nil && s.Resync.Running && s.Resync.DoneBytes >= resyncVolSize*2/5
			})
			if first.Resync.DoneBytes >= resyncVolSize {
				t.Fatalf("the rate limit did not hold the pass back: %+v", first.Resync)
			}
			var firstID uint64
			if victim == "secondary" {
				p.b.kill9()
				dead := p.a.waitFor("link lost, regions pending", func(s engine.Status) bool {
					return s.Conn != engine.ConnConnected && s.Conn != engine.ConnSyncSource && s.ResyncPendingBytes > 0
				})
				t.Logf("b killed at about %d of %d bytes compared (%d sent); pending after: %d; conn %s",
					first.Resync.DoneBytes, first.Resync.TotalBytes, first.Resync.SentBytes, dead.ResyncPendingBytes, dead.Conn)
				if dead.ResyncPendingBytes >= resyncVolSize {
					t.Fatalf("nothing was kept of the first pass: %d bytes pending", dead.ResyncPendingBytes)
				}
				p.b.start()
				firstID = first.Resync.ID
			} else {
				// The primary saves its dirty-region map about once a second
				// during a pass: kill it right after a save made past 40%, so
				// that the saved map holds the first pass's progress. At
				// 12 MiB/s about two seconds of the pass are left then.
				mapFile := filepath.Join(p.a.img+".journal", "dirty.map")
				seen := time.Now()
				deadline := seen.Add(5 * time.Second)
				for {
					if fi, err := os.Stat(mapFile); err == nil && fi.ModTime().After(seen) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s not saved within 5 s of the pass reaching 40%%", mapFile)
					}
					time.Sleep(10 * time.Millisecond)
				}
				p.a.kill9()
				p.b.waitFor("b lost the primary, still Inconsistent", func(s engine.Status) bool {
					return s.Conn != engine.ConnConnected && s.Conn != engine.ConnSyncTarget && s.Disk == engine.DiskInconsistent
				})
				p.a.start() // a new daemon numbers its passes from 1 again
			}
			st := p.waitResynced(firstID, waitTimeout)
			pr := st.Resync
			wire := wireBytes(p.proxy)
			t.Logf("second pass: total %d, sent %d in %.2fs; wire in all %d bytes (%.2f volumes)",
				pr.TotalBytes, pr.SentBytes, pr.Elapsed, wire, float64(wire)/resyncVolSize)
			if pr.TotalBytes >= first.Resync.TotalBytes || pr.Full {
				t.Errorf("the second pass did not resume: total %d (first %d), full %v", pr.TotalBytes, first.Resync.TotalBytes, pr.Full)
			}
			if wire > resyncVolSize*3/2 {
				t.Errorf("%d bytes on the wire for a %d-byte volume: want well under two passes (<= 1.5)", wire, resyncVolSize)
			}
			p.requireIdentical()
		})
	}
}

// e. Writes during the initial sync: a verified load runs on the primary
// while a rate-limited full resync of a wholly different secondary is
// under way. No chunk the resync sends may overwrite a write acknowledged
// meanwhile: the images end identical and hold every acknowledged write.
func TestResyncUnderWriteLoad(t *testing.T) {
	seed := testSeed(t)
	p := existingPair(t, "", func(aImg, bImg string) {
		writeFile(t, aImg, randomBytes(resyncVolSize, seed))
		writeFile(t, bImg, randomBytes(resyncVolSize, ^seed))
	}, func(node string, m map[string]any) {
		if node == "a" {
			// 64 MiB at 16 MiB/s (after a second's burst): at least 3 s,
			// longer than the 2 s load that starts once the pass runs.
			setVolumeKey(t, m, "resync", map[string]any{"rate": "16M"})
		}
	})
	p.start()
	p.a.waitFor("resync running", func(s engine.Status) bool { return s.Resync != nil && s.Resync.Running })
	c := p.a.dial()
	log := runCleanLoad(t, c, loadOptions(seed, 0, resyncVolSize/fine, 16, 2*time.Second))
	during := p.a.status()
	st := p.waitResynced(0, waitTimeout)
	t.Logf("%d writes acknowledged, the resync at %d of %d bytes when the load ended; pass %.2fs, sent %d",
		log.Acked, during.Resync.DoneBytes, during.Resync.TotalBytes, st.Resync.Elapsed, st.Resync.SentBytes)
	if !during.Resync.Running || during.Resync.ID != st.Resync.ID {
		t.Errorf("the pass was over before the load ended (%+v): the test did not overlap them", during.Resync)
	}
	verifyOn(t, p.a, c, log, "after the resync")
	c.Close()
	p.requireIdentical()
}

// verifyResult runs `twinblock verify` on a with args and returns the
// result and, with --json, the decoded progress.
func verifyRun(t *testing.T, n *pairNode, args ...string) (result, engine.Progress) {
	t.Helper()
	r := n.cli(append([]string{"verify", pairVolume}, args...)...)
	var pr engine.Progress
	for _, a := range args {
		if a == "--json" {
			if err := json.Unmarshal([]byte(r.stdout), &pr); err != nil {
				t.Fatalf("verify --json: %v in:\n%s", err, r)
			}
		}
	}
	return r, pr
}

// d. Bytes flipped in the secondary's file behind the engine's back are
// found by verify (exit 1, table and JSON), fixed by verify --repair, and
// a later verify is clean; a verify running alongside a write load
// reports nothing.
func TestResyncVerifyCorruption(t *testing.T) {
	seed := testSeed(t)
	p := existingPair(t, "", func(aImg, bImg string) {
		d := randomBytes(resyncVolSize, seed)
		writeFile(t, aImg, d)
		writeFile(t, bImg, d)
	}, nil)
	p.start()
	p.waitResynced(0, waitTimeout)

	// Two corruptions: 16 bytes inside one 4 KiB block, and 100 bytes
	// straddling two blocks further on.
	r := rand.New(rand.NewPCG(seed, 0xbad))
	blk1 := int64(r.IntN(resyncVolSize/2/fine-1)) * fine // never adjacent to blk2
	blk2 := resyncVolSize/2 + int64(r.IntN(resyncVolSize/2/fine-2))*fine
	flip := func(off int64, n int) {
		f, err := os.OpenFile(p.b.img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] ^= 0xff
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	flip(blk1+100, 16)
	flip(blk2+fine-50, 100)
	want := []engine.Range{{Offset: uint64(blk1), Length: fine}, {Offset: uint64(blk2), Length: 2 * fine}}

	res := func(p engine.Progress) string { b, _ := json.Marshal(p.Mismatches); return string(b) }
	// The table.
	rt, _ := verifyRun(t, p.a)
	if rt.code != 1 {
		t.Fatalf("verify over a corrupted secondary: want exit 1, got %s", rt)
	}
	for _, w := range want {
		if !strings.Contains(rt.stdout, strconv.FormatUint(w.Offset, 10)) || !strings.Contains(rt.stdout, fmt.Sprintf("%#x", w.Offset)) {
			t.Errorf("verify table does not list the range at %d (%#x):\n%s", w.Offset, w.Offset, rt.stdout)
		}
	}
	if !strings.Contains(rt.stdout, "2 range(s) differ") {
		t.Errorf("verify table: want 2 ranges:\n%s", rt.stdout)
	}
	// JSON.
	rj, pj := verifyRun(t, p.a, "--json")
	if rj.code != 1 {
		t.Fatalf("verify --json: want exit 1, got %s", rj)
	}
	if got, w := res(pj), res(engine.Progress{Mismatches: want}); got != w || pj.MismatchBytes != 3*fine || pj.Kind != "verify" {
		t.Fatalf("verify --json: mismatches %s (%d bytes), want %s:\n%s", got, pj.MismatchBytes, w, rj.stdout)
	}
	if pj.DoneBytes != resyncVolSize {
		t.Errorf("verify compared %d bytes, want %d", pj.DoneBytes, resyncVolSize)
	}
	// Verify changed nothing.
	if d := diffBytes(t, p.a.img, p.b.img); d != 3*fine {
		t.Fatalf("after a plain verify %d bytes differ, want %d", d, 3*fine)
	}
	// Repair.
	rr, pr := verifyRun(t, p.a, "--repair", "--json")
	if rr.code != 0 || !pr.Repair || pr.RepairedBytes != 3*fine || res(pr) != res(engine.Progress{Mismatches: want}) {
		t.Fatalf("verify --repair: want exit 0 and %d bytes repaired, got %+v\n%s", 3*fine, pr, rr)
	}
	rc, pc := verifyRun(t, p.a, "--json")
	if rc.code != 0 || len(pc.Mismatches) != 0 {
		t.Fatalf("verify after repair: want exit 0 and no mismatch, got %s", rc)
	}
	// The data itself: b's file matches a's now.
	p.a.waitFor("primary applied", func(s engine.Status) bool { return s.AppliedSeq == s.LastSeq })
	if d := diffBytes(t, p.a.img, p.b.img); d != 0 {
		t.Fatalf("after verify --repair %d bytes still differ", d)
	}

	// Verify while a write load runs over the whole volume: hashes are
	// taken at the same point of the write stream on both sides, so no
	// write in flight shows up as a difference. The rate limit stretches
	// the pass over the load.
	c := p.a.dial()
	_, wait := startLoad(c, loadOptions(seed+1, 0, resyncVolSize/fine, 16, 4*time.Second))
	time.Sleep(200 * time.Millisecond)
	rl, pl := verifyRun(t, p.a, "--json", "--rate", "24M")
	log, err := wait()
	if err != nil {
		t.Fatalf("write load during verify: %v", err)
	}
	t.Logf("verify under load: %d writes acknowledged, %.2fs, exit %d", log.Acked, pl.Elapsed, rl.code)
	if rl.code != 0 || len(pl.Mismatches) != 0 || pl.DoneBytes != resyncVolSize {
		t.Fatalf("verify under a write load reported differences (or failed):\n%s", rl)
	}
	if log.Acked < 100 {
		t.Fatalf("the load did not run during the verify: %d writes", log.Acked)
	}
	c.Close()
	p.requireIdentical()
}

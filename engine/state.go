package engine

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// State is what a node remembers about a volume across restarts, besides
// the data and the journal: identity, role and data generations.
type State struct {
	Version int       `json:"version"`
	UUID    string    `json:"uuid"` // 32 hex digits, the same on both nodes
	Size    uint64    `json:"size"`
	Role    Role      `json:"role"`
	Disk    DiskState `json:"disk"`
	// Generation identifies the data lineage: a new random one is made
	// whenever a node becomes primary. History holds earlier ones with the
	// last seq written under each, newest first.
	Generation uint64     `json:"generation"`
	History    []GenEntry `json:"history,omitempty"`
	// PeerNeedsResync (primary): the peer needs a block resync of the
	// regions in the dirty-region map (the journal no longer holds what it
	// lacks, or its copy is Inconsistent).
	PeerNeedsResync bool `json:"peer_needs_resync,omitempty"`
	// SyncID is, on a resync target, the resync it is receiving (so an
	// interrupted one resumes); 0 otherwise.
	SyncID uint64 `json:"sync_id,omitempty"`
}

// GenEntry is a past generation and the last seq written under it.
type GenEntry struct {
	Gen    uint64 `json:"gen"`
	EndSeq uint64 `json:"end_seq"`
}

// maxHistory bounds State.History (and the wire's Hello.History).
const maxHistory = 32

const stateVersion = 1

// ErrNoState: the store holds no state yet (a volume never initialised).
var ErrNoState = errors.New("engine: no volume state")

// StateStore persists State. Save must be atomic and durable when it
// returns: after a crash Load returns either the old or the new state.
type StateStore interface {
	Load() (State, error)
	Save(State) error
}

// NewUUID returns a random volume UUID in hex.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// ParseUUID checks and normalises a UUID (with or without dashes).
func ParseUUID(s string) ([16]byte, error) {
	var out [16]byte
	clean := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			clean = append(clean, s[i])
		}
	}
	if len(clean) != 32 {
		return out, fmt.Errorf("engine: uuid %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(out[:], clean); err != nil {
		return out, fmt.Errorf("engine: uuid %q: %w", s, err)
	}
	return out, nil
}

// NewGeneration returns a new random, non-zero data generation.
func NewGeneration() uint64 { return newGeneration() }

func newGeneration() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	g := binary.LittleEndian.Uint64(b[:])
	if g == 0 {
		g = 1
	}
	return g
}

// FileState stores State as JSON in a file, replaced atomically.
type FileState struct {
	Path string
	mu   sync.Mutex
}

// Load reads the state file.
func (f *FileState) Load() (State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, ErrNoState
	}
	if err != nil {
		return State{}, fmt.Errorf("engine: state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("engine: state %s: %w", f.Path, err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("engine: state %s: version %d not supported", f.Path, s.Version)
	}
	if _, err := ParseUUID(s.UUID); err != nil {
		return State{}, fmt.Errorf("engine: state %s: %w", f.Path, err)
	}
	return s, nil
}

// Save writes the state: temp file, fsync, rename, fsync directory.
func (f *FileState) Save(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSync(f.Path, append(b, '\n')); err != nil {
		return fmt.Errorf("engine: state: %w", err)
	}
	return nil
}

// MemState keeps State in memory (tests).
type MemState struct {
	mu sync.Mutex
	s  *State
}

// Load returns the saved state.
func (m *MemState) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.s == nil {
		return State{}, ErrNoState
	}
	s := *m.s
	s.History = append([]GenEntry(nil), s.History...)
	return s, nil
}

// Save stores a copy.
func (m *MemState) Save(s State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.Version = stateVersion
	s.History = append([]GenEntry(nil), s.History...)
	m.s = &s
	return nil
}

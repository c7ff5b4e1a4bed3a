package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every validation error; the message names the field.
var ErrInvalid = errors.New("config: invalid")

// DefaultListen is where `twinblock serve` exports volumes unless told otherwise.
const DefaultListen = "127.0.0.1:10809"

// Config is the daemon's configuration file (YAML).
type Config struct {
	// Listen is the TCP address for NBD clients; "none" disables TCP.
	Listen string `yaml:"listen,omitempty"`
	// Socket is an optional unix socket path for NBD clients on the same host.
	Socket string `yaml:"socket,omitempty"`
	// AdminSocket is the unix socket the CLI's status, promote, demote,
	// connect and disconnect talk to. Default "twinblock.sock" beside the
	// config file.
	AdminSocket string `yaml:"admin_socket,omitempty"`
	// Node is this node's id (replication; it must match the name in the
	// node's certificate).
	Node string `yaml:"node,omitempty"`
	// Replication, when set, replicates every file volume to the peer.
	Replication *Replication `yaml:"replication,omitempty"`
	// Volumes lists the exported volumes; the export name is the volume name.
	Volumes []Volume `yaml:"volumes"`

	// NoAdmin disables the admin socket (serve's flag form without --admin).
	NoAdmin bool `yaml:"-"`

	// base is the config file's name (the admin socket is named after it).
	base string
	// dir is the directory of the file the config was read from; relative
	// paths in the file are relative to it.
	dir string
}

// Replication describes the link to the peer node in the other datacenter.
type Replication struct {
	// Listen is the peer-link address of this node.
	Listen string `yaml:"listen"`
	// Peer is the peer's node id; PeerAddress its peer-link address.
	Peer        string `yaml:"peer"`
	PeerAddress string `yaml:"peer_address"`
	// TLS files (mutual TLS, on by default). `twinblock certs pair` makes them.
	TLS TLS `yaml:"tls,omitempty"`
	// InsecurePlaintext turns TLS off. Only for links that are already
	// protected (a private fibre, an IPsec tunnel).
	InsecurePlaintext bool `yaml:"insecure_plaintext,omitempty"`
	// Mode: sync (default; the peer's journal holds the write durably
	// before it is acknowledged), memory (the peer received it) or async
	// (acknowledged locally; lag bounded by async_max_lag/async_max_age).
	Mode string `yaml:"mode,omitempty"`
	// Retain bounds the journal kept for a disconnected peer (default 1G).
	Retain Size `yaml:"retain,omitempty"`
	// Compression of the replication stream: s2 (default: cheap, skips
	// what does not shrink), zstd (smaller, more CPU) or none.
	Compression string `yaml:"compression,omitempty"`
	AsyncMaxLag Size   `yaml:"async_max_lag,omitempty"`
	AsyncMaxAge string `yaml:"async_max_age,omitempty"`
}

// TLS names the PEM files of a node.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Volume is one exported volume.
type Volume struct {
	Name        string  `yaml:"name"`
	Description string  `yaml:"description,omitempty"`
	ReadOnly    bool    `yaml:"read_only,omitempty"`
	Backend     Backend `yaml:"backend"`
	// Journal configures the volume's write-ahead journal (file volumes).
	Journal Journal `yaml:"journal,omitempty"`
	// Mode overrides replication.mode for this volume (sync, memory, async).
	Mode string `yaml:"mode,omitempty"`
	// Resync configures block resync and verify (replicated volumes).
	Resync Resync `yaml:"resync,omitempty"`
}

// Journal settings. Every write to a file volume is made durable in the
// journal before it is acknowledged.
type Journal struct {
	// Dir holds the journal segments; default "<backend path>.journal".
	Dir string `yaml:"dir,omitempty"`
	// MaxSize bounds the journal above the last checkpoint; writes wait for
	// a checkpoint when it is reached. Default 1G.
	MaxSize Size `yaml:"max_size,omitempty"`
	// SegmentSize is the size of each preallocated segment file. Default 64M.
	SegmentSize Size `yaml:"segment_size,omitempty"`
}

// JournalDir is where the volume's journal lives ("" for mem volumes,
// which have none). An rbd volume's is journal.dir (required: there is no
// backend path to put it beside).
func (c *Config) JournalDir(v *Volume) string {
	switch v.Backend.Type {
	case "file":
		if v.Journal.Dir != "" {
			return c.Resolve(v.Journal.Dir)
		}
		return c.Resolve(v.Backend.Path) + ".journal"
	case "rbd":
		return c.Resolve(v.Journal.Dir)
	}
	return ""
}

// Backend says where a volume's bytes live.
type Backend struct {
	// Type is "file" (regular file or raw block device), "rbd" (a Ceph RBD
	// image; needs a twinblock built with `make build-ceph`) or "mem" (in
	// memory, lost on exit: tests and benchmarks).
	Type string `yaml:"type"`
	// Path of the file or block device (type file).
	Path string `yaml:"path,omitempty"`
	// Size is required for mem; for file and rbd it is used by `twinblock
	// create` only (an existing file's or image's own size wins).
	Size Size `yaml:"size,omitempty"`

	// Type rbd: the cluster's ceph.conf (default /etc/ceph/ceph.conf), the
	// cephx client id without "client." (default admin), its keyring
	// (default: what ceph.conf says), and the image: pool, optional
	// namespace, image name.
	CephConf  string `yaml:"ceph_conf,omitempty"`
	Client    string `yaml:"client,omitempty"`
	Keyring   string `yaml:"keyring,omitempty"`
	Pool      string `yaml:"pool,omitempty"`
	Namespace string `yaml:"namespace,omitempty"`
	Image     string `yaml:"image,omitempty"`
	// ConnectTimeout bounds reaching the monitors and each monitor
	// request (default 10s); OpTimeout bounds each OSD request, after
	// which the volume fails rather than hang (default 60s; "0" waits
	// forever). Go durations: 500ms, 10s, 2m.
	ConnectTimeout string `yaml:"connect_timeout,omitempty"`
	OpTimeout      string `yaml:"op_timeout,omitempty"`
}

// RBDTimeouts returns connect_timeout and op_timeout (zero when unset;
// op_timeout "0" is returned as -1: wait forever). Validate has checked
// them.
func (b *Backend) RBDTimeouts() (connect, op time.Duration) {
	connect, _ = time.ParseDuration(b.ConnectTimeout)
	if b.OpTimeout != "" {
		op, _ = time.ParseDuration(b.OpTimeout)
		if op == 0 {
			op = -1
		}
	}
	return connect, op
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether name can be a volume (and export) name: it is
// also used in file names, so it is kept to a safe alphabet.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: volume name %q: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with . _ -)", ErrInvalid, name)
	}
	return nil
}

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.dir = filepath.Dir(abs)
	c.base = filepath.Base(abs)
	return c, nil
}

// Parse decodes and validates YAML. Unknown fields are errors (a typo must
// not silently become a default).
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty file", ErrInvalid)
		}
		var pe *posError
		if errors.As(err, &pe) {
			if k := keyAt(b, pe.line, pe.col); k != "" {
				return nil, fmt.Errorf("%w: line %d: %s: %v", ErrInvalid, pe.line, k, pe.err)
			}
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if len(c.Volumes) == 0 {
		return fmt.Errorf("%w: volumes: at least one volume is required", ErrInvalid)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Listen == "none" && c.Socket == "" {
		return fmt.Errorf("%w: listen: \"none\" needs socket to be set, or nothing is exported", ErrInvalid)
	}
	if err := c.validateReplication(); err != nil {
		return err
	}
	seen := map[string]int{}
	for i := range c.Volumes {
		v := &c.Volumes[i]
		field := fmt.Sprintf("volumes[%d]", i)
		if err := ValidName(v.Name); err != nil {
			return fmt.Errorf("%s.name: %w", field, err)
		}
		if j, dup := seen[v.Name]; dup {
			return fmt.Errorf("%w: %s.name: %q is already used by volumes[%d]", ErrInvalid, field, v.Name, j)
		}
		seen[v.Name] = i
		if err := v.Backend.validate(field + ".backend"); err != nil {
			return err
		}
		if err := v.validateJournal(field + ".journal"); err != nil {
			return err
		}
		if err := v.Resync.validate(field + ".resync"); err != nil {
			return err
		}
		switch v.Mode {
		case "", "sync", "memory", "async":
		default:
			return fmt.Errorf("%w: %s.mode: %q (want sync, memory or async)", ErrInvalid, field, v.Mode)
		}
		if v.Mode != "" && c.Replication == nil {
			return fmt.Errorf("%w: %s.mode: set, but there is no replication block", ErrInvalid, field)
		}
	}
	return nil
}

// Modes accepted in replication.mode.
var Modes = []string{"sync", "memory", "async"}

func (c *Config) validateReplication() error {
	r := c.Replication
	if r == nil {
		return nil
	}
	if c.Node == "" {
		return fmt.Errorf("%w: node: required with replication (this node's id)", ErrInvalid)
	}
	if err := ValidName(c.Node); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if r.Listen == "" {
		return fmt.Errorf("%w: replication.listen: required (this node's peer-link address)", ErrInvalid)
	}
	if r.Peer == "" {
		return fmt.Errorf("%w: replication.peer: required (the peer's node id)", ErrInvalid)
	}
	if r.Peer == c.Node {
		return fmt.Errorf("%w: replication.peer: %q is this node", ErrInvalid, r.Peer)
	}
	if r.PeerAddress == "" {
		return fmt.Errorf("%w: replication.peer_address: required", ErrInvalid)
	}
	if !r.InsecurePlaintext {
		for f, v := range map[string]string{"ca": r.TLS.CA, "cert": r.TLS.Cert, "key": r.TLS.Key} {
			if v == "" {
				return fmt.Errorf("%w: replication.tls.%s: required (or set insecure_plaintext: true)", ErrInvalid, f)
			}
		}
	}
	switch r.Mode {
	case "", "sync", "memory", "async":
	default:
		return fmt.Errorf("%w: replication.mode: %q (want sync, memory or async)", ErrInvalid, r.Mode)
	}
	switch r.Compression {
	case "", "s2", "zstd", "none":
	default:
		return fmt.Errorf("%w: replication.compression: %q (want s2, zstd or none)", ErrInvalid, r.Compression)
	}
	if r.AsyncMaxAge != "" {
		if d, err := time.ParseDuration(r.AsyncMaxAge); err != nil || d <= 0 {
			return fmt.Errorf("%w: replication.async_max_age: %q is not a positive duration (e.g. 5s)", ErrInvalid, r.AsyncMaxAge)
		}
	}
	return nil
}

// AdminSocketPath is where the daemon's admin socket lives: admin_socket,
// or the config file's name with ".sock" for its extension, beside it
// (twinblock.yaml -> twinblock.sock), so two nodes' configs in one
// directory do not collide.
func (c *Config) AdminSocketPath() string {
	if c.AdminSocket != "" {
		return c.Resolve(c.AdminSocket)
	}
	name := "twinblock.sock"
	if c.base != "" {
		name = strings.TrimSuffix(c.base, filepath.Ext(c.base)) + ".sock"
	}
	return c.Resolve(name)
}

// SetFile records the config file's path (for a config made in memory
// that will be written there).
func (c *Config) SetFile(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	c.dir, c.base = filepath.Dir(abs), filepath.Base(abs)
	return nil
}

// StatePath is where a volume's state (uuid, role, generations) lives.
func (c *Config) StatePath(v *Volume) string {
	if d := c.JournalDir(v); d != "" {
		return filepath.Join(d, "state.json")
	}
	return ""
}

func (v *Volume) validateJournal(field string) error {
	j := v.Journal
	if v.Backend.Type == "mem" && j != (Journal{}) {
		return fmt.Errorf("%w: %s: mem volumes have no journal (nothing outlives the process)", ErrInvalid, field)
	}
	if v.Backend.Type == "rbd" && j.Dir == "" {
		return fmt.Errorf("%w: %s.dir: required for an rbd volume (a local directory for the journal and state; there is no backend path to put it beside)", ErrInvalid, field)
	}
	if j.MaxSize != 0 && j.MaxSize < 128<<20 {
		return fmt.Errorf("%w: %s.max_size: %s is too small (at least 128M)", ErrInvalid, field, j.MaxSize)
	}
	if j.SegmentSize != 0 && (j.SegmentSize < 33<<20 || j.SegmentSize%4096 != 0) {
		return fmt.Errorf("%w: %s.segment_size: %s must be at least 33M (one segment holds a 32M NBD write) and a multiple of 4K", ErrInvalid, field, j.SegmentSize)
	}
	if j.MaxSize != 0 && j.SegmentSize != 0 && j.MaxSize < 2*j.SegmentSize {
		return fmt.Errorf("%w: %s.max_size: must be at least twice segment_size", ErrInvalid, field)
	}
	return nil
}

func (b *Backend) validate(field string) error {
	switch b.Type {
	case "file", "mem":
		for _, f := range [][2]string{{"ceph_conf", b.CephConf}, {"client", b.Client}, {"keyring", b.Keyring},
			{"pool", b.Pool}, {"namespace", b.Namespace}, {"image", b.Image},
			{"connect_timeout", b.ConnectTimeout}, {"op_timeout", b.OpTimeout}} {
			if f[1] != "" {
				return fmt.Errorf("%w: %s.%s: only used by type rbd", ErrInvalid, field, f[0])
			}
		}
	}
	switch b.Type {
	case "file":
		if b.Path == "" {
			return fmt.Errorf("%w: %s.path: required for type file", ErrInvalid, field)
		}
		if b.Size < 0 {
			return fmt.Errorf("%w: %s.size: must not be negative", ErrInvalid, field)
		}
	case "mem":
		if b.Size <= 0 {
			return fmt.Errorf("%w: %s.size: required (> 0) for type mem", ErrInvalid, field)
		}
		if b.Path != "" {
			return fmt.Errorf("%w: %s.path: not used by type mem", ErrInvalid, field)
		}
	case "rbd":
		return b.validateRBD(field)
	case "":
		return fmt.Errorf("%w: %s.type: required (file, rbd or mem)", ErrInvalid, field)
	default:
		return fmt.Errorf("%w: %s.type: unknown backend %q (want file, rbd or mem)", ErrInvalid, field, b.Type)
	}
	return nil
}

// rbdNameRE is what pool, namespace and image names may hold here: rbd(8)
// joins them with '/' and marks snapshots with '@'.
var rbdNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._+-]{0,249}$`)

func (b *Backend) validateRBD(field string) error {
	if b.Path != "" {
		return fmt.Errorf("%w: %s.path: not used by type rbd (set pool and image)", ErrInvalid, field)
	}
	if b.Size < 0 {
		return fmt.Errorf("%w: %s.size: must not be negative", ErrInvalid, field)
	}
	for _, f := range []struct {
		name, v  string
		required bool
	}{{"pool", b.Pool, true}, {"image", b.Image, true}, {"namespace", b.Namespace, false}} {
		if f.v == "" {
			if f.required {
				return fmt.Errorf("%w: %s.%s: required for type rbd", ErrInvalid, field, f.name)
			}
			continue
		}
		if !rbdNameRE.MatchString(f.v) {
			return fmt.Errorf("%w: %s.%s: %q: use letters, digits and . _ + - (no '/' or '@')", ErrInvalid, field, f.name, f.v)
		}
	}
	if strings.HasPrefix(b.Client, "client.") {
		return fmt.Errorf("%w: %s.client: %q: give the id without \"client.\" (e.g. %q)", ErrInvalid, field, b.Client, strings.TrimPrefix(b.Client, "client."))
	}
	if strings.ContainsAny(b.Client, " \t/") {
		return fmt.Errorf("%w: %s.client: %q is not a cephx id", ErrInvalid, field, b.Client)
	}
	if b.ConnectTimeout != "" {
		if d, err := time.ParseDuration(b.ConnectTimeout); err != nil || d <= 0 {
			return fmt.Errorf("%w: %s.connect_timeout: %q is not a positive duration (e.g. 10s)", ErrInvalid, field, b.ConnectTimeout)
		}
	}
	if b.OpTimeout != "" {
		if d, err := time.ParseDuration(b.OpTimeout); err != nil || d < 0 {
			return fmt.Errorf("%w: %s.op_timeout: %q is not a duration (e.g. 60s; 0 waits forever)", ErrInvalid, field, b.OpTimeout)
		}
	}
	return nil
}

// Resolve turns a path from the config file into one usable from the
// current directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// SetDir sets the directory relative paths are resolved against.
func (c *Config) SetDir(dir string) { c.dir = dir }

// Volume returns the named volume.
func (c *Config) Volume(name string) (*Volume, bool) {
	for i := range c.Volumes {
		if c.Volumes[i].Name == name {
			return &c.Volumes[i], true
		}
	}
	return nil, false
}

// Marshal encodes the config as YAML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return buf.Bytes(), enc.Close()
}

// WriteFile writes the config atomically (temp file, fsync, rename), so a
// crash never leaves a half-written config behind.
func (c *Config) WriteFile(path string) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

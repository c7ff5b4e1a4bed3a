package engine

import "errors"

// Role of a node for one volume.
type Role string

// Roles.
const (
	RolePrimary   Role = "primary"
	RoleSecondary Role = "secondary"
)

// DiskState says how much a node's copy can be trusted (DRBD's terms).
type DiskState string

// Disk states.
const (
	// UpToDate: holds every acknowledged write (the primary's own copy, or a
	// secondary that was caught up when it last heard from the primary).
	DiskUpToDate DiskState = "UpToDate"
	// Outdated: crash-consistent but behind (catching up from the journal,
	// or known to have missed writes).
	DiskOutdated DiskState = "Outdated"
	// Inconsistent: a block-level resync is under way or needed; the copy
	// is not usable as a whole.
	DiskInconsistent DiskState = "Inconsistent"
	// DiskUnknown: the peer's state when it is not connected.
	DiskUnknown DiskState = "DUnknown"
)

// ConnState is the state of the peer link.
type ConnState string

// Link states.
const (
	ConnStandalone  ConnState = "StandAlone"  // no peer configured, or disconnected by the admin
	ConnConnecting  ConnState = "Connecting"  // trying to reach the peer
	ConnCatchingUp  ConnState = "CatchingUp"  // connected, replaying the journal to the secondary
	ConnConnected   ConnState = "Connected"   // connected, streaming live
	ConnSyncSource  ConnState = "SyncSource"  // connected, streaming live and resyncing the peer's blocks
	ConnSyncTarget  ConnState = "SyncTarget"  // connected, receiving live writes and a block resync
	ConnNeedsResync ConnState = "NeedsResync" // the journal no longer holds what the peer lacks
	ConnSplitBrain  ConnState = "SplitBrain"  // both sides wrote on their own; nothing synced
	ConnRefused     ConnState = "Refused"     // the peer was refused (wrong volume, size, identity...)
)

// Status is a snapshot of a volume for `twinblock status`.
type Status struct {
	Name     string    `json:"name"`
	UUID     string    `json:"uuid,omitempty"`
	Size     uint64    `json:"size"`
	Node     string    `json:"node,omitempty"`
	Role     Role      `json:"role"`
	Disk     DiskState `json:"disk"`
	Mode     string    `json:"mode,omitempty"`
	Peer     string    `json:"peer,omitempty"`
	PeerAddr string    `json:"peer_address,omitempty"`
	Conn     ConnState `json:"connection"`
	PeerDisk DiskState `json:"peer_disk,omitempty"`
	// ConnError is why the link last failed or was refused.
	ConnError string `json:"connection_error,omitempty"`
	// Generation is the current data generation (hex).
	Generation string `json:"generation,omitempty"`
	// Journal positions.
	LastSeq       uint64 `json:"last_seq"`
	DurableSeq    uint64 `json:"durable_seq"`
	AppliedSeq    uint64 `json:"applied_seq"`
	CheckpointSeq uint64 `json:"checkpoint_seq"`
	// PeerAckedSeq is the highest seq the peer holds durably (primary).
	PeerAckedSeq uint64 `json:"peer_acked_seq,omitempty"`
	// Lag behind the primary: records and bytes the peer does not hold yet.
	LagRecords uint64 `json:"lag_records"`
	LagBytes   int64  `json:"lag_bytes"`
	// InFlight is the number of writes admitted and not yet answered.
	InFlight int `json:"in_flight"`
	// Journal counters since the daemon started: records appended and
	// group commits (fdatasync rounds); appends / commits is the average
	// batch. CommitMicros is a recent group commit's duration (moving
	// average), 0 before the first.
	JournalAppends uint64  `json:"journal_appends,omitempty"`
	JournalCommits uint64  `json:"journal_commits,omitempty"`
	CommitMicros   float64 `json:"commit_us,omitempty"`
	// PeerAckMicros (primary, sync and memory modes) is how long the peer
	// has lately taken to acknowledge a record as durable (moving average),
	// what commit deferral aims by.
	PeerAckMicros float64 `json:"peer_ack_us,omitempty"`
	// RTT of the peer link in microseconds (0 when unknown).
	RTTMicros int64 `json:"rtt_us,omitempty"`
	// Bytes the current peer link sent and received (frames as written to
	// the connection, after compression, before TLS).
	LinkBytesSent     uint64 `json:"link_bytes_sent,omitempty"`
	LinkBytesReceived uint64 `json:"link_bytes_received,omitempty"`
	// Failed holds the error that failed the volume, if any.
	Failed string `json:"failed,omitempty"`
	// ResyncPendingBytes (primary): the size of the regions the peer still
	// needs from a block resync.
	ResyncPendingBytes uint64 `json:"resync_pending_bytes,omitempty"`
	// Resync is the running (or last) block resync: on the primary its own
	// pass, on the target the primary's latest report. Verify is the
	// running or last online verify (primary).
	Resync *Progress `json:"resync,omitempty"`
	Verify *Progress `json:"verify,omitempty"`
}

// Errors of role changes, tested with errors.Is.
var (
	ErrNotPrimary   = errors.New("engine: volume is not primary")
	ErrNotSecondary = errors.New("engine: volume is not secondary")
	ErrNotUpToDate  = errors.New("engine: local copy is not up to date")
	ErrPeerPrimary  = errors.New("engine: peer is primary")
	ErrNoPeer       = errors.New("engine: volume has no peer configured")
)

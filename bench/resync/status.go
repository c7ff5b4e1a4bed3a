package resync

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Progress is the part of a resync progress object of `twinblock status
// --json` (engine.Progress) that the harness reads.
type Progress struct {
	ID         uint64  `json:"id"`
	Kind       string  `json:"kind"`
	Full       bool    `json:"full"`
	Running    bool    `json:"running"`
	TotalBytes uint64  `json:"total_bytes"`
	DoneBytes  uint64  `json:"done_bytes"`
	SentBytes  uint64  `json:"sent_bytes"`
	Elapsed    float64 `json:"elapsed_seconds"`
	Error      string  `json:"error"`
}

// VolumeStatus is the part of one element of `twinblock status --json`
// that the harness reads.
type VolumeStatus struct {
	Name               string    `json:"name"`
	Role               string    `json:"role"`
	Disk               string    `json:"disk"`
	Connection         string    `json:"connection"`
	PeerDisk           string    `json:"peer_disk"`
	ConnectionError    string    `json:"connection_error"`
	ResyncPendingBytes uint64    `json:"resync_pending_bytes"`
	LinkBytesSent      uint64    `json:"link_bytes_sent"`
	LinkBytesReceived  uint64    `json:"link_bytes_received"`
	Resync             *Progress `json:"resync"`
}

// Resynced reports whether v (the primary) has finished a resync pass and
// its peer is Connected, UpToDate and owed nothing.
func (v VolumeStatus) Resynced() bool {
	return v.Resync != nil && !v.Resync.Running && v.Connection == "Connected" &&
		v.PeerDisk == "UpToDate" && v.ResyncPendingBytes == 0
}

// maxStatusVolumes caps the array a status answer may hold: a daemon in
// this harness serves one volume, and a runaway answer must not make the
// harness allocate without bound.
const maxStatusVolumes = 1024

// ParseStatus decodes `twinblock status --json`: a JSON array of volume
// states. Unknown fields are ignored (the daemon adds fields over time).
func ParseStatus(data []byte) ([]VolumeStatus, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '[' {
		return nil, fmt.Errorf("%w: not a JSON array", ErrStatusOutput)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStatusOutput, err)
	}
	var vs []VolumeStatus
	for dec.More() {
		if len(vs) == maxStatusVolumes {
			return nil, fmt.Errorf("%w: more than %d volumes", ErrStatusOutput, maxStatusVolumes)
		}
		var v VolumeStatus
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStatusOutput, err)
		}
		if v.Name == "" {
			return nil, fmt.Errorf("%w: volume without a name", ErrStatusOutput)
		}
		if p := v.Resync; p != nil && (p.DoneBytes > p.TotalBytes || p.Elapsed < 0 || p.Elapsed != p.Elapsed) {
			return nil, fmt.Errorf("%w: volume %s: implausible resync progress %+v", ErrStatusOutput, v.Name, *p)
		}
		vs = append(vs, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStatusOutput, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the array", ErrStatusOutput)
	}
	return vs, nil
}

// findVolume returns the state of volume name.
func findVolume(vs []VolumeStatus, name string) (VolumeStatus, error) {
	for _, v := range vs {
		if v.Name == name {
			return v, nil
		}
	}
	return VolumeStatus{}, fmt.Errorf("%w: no volume %q", ErrStatusOutput, name)
}

package resync

import (
	"errors"
	"fmt"

	"github.com/twinblock/twinblock/bench/benchutil"
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
	return benchutil.DecodeArray(data, maxStatusVolumes, ErrStatusOutput, func(v *VolumeStatus) error {
		if v.Name == "" {
			return errors.New("volume without a name")
		}
		if p := v.Resync; p != nil && (p.DoneBytes > p.TotalBytes || p.Elapsed < 0 || p.Elapsed != p.Elapsed) {
			return fmt.Errorf("volume %s: implausible resync progress %+v", v.Name, *p)
		}
		return nil
	})
}

// VolumeName is the name of the volume v is the state of.
func (v VolumeStatus) VolumeName() string { return v.Name }

// findVolume returns the state of volume name.
func findVolume(vs []VolumeStatus, name string) (VolumeStatus, error) {
	return benchutil.FindVolume(vs, name, ErrStatusOutput)
}

package durable

import (
	"errors"

	"github.com/twinblock/twinblock/bench/benchutil"
)

// VolumeStatus is the part of one element of `twinblock status --json`
// that the harness reads.
type VolumeStatus struct {
	Name            string `json:"name"`
	Role            string `json:"role"`
	Disk            string `json:"disk"`
	Mode            string `json:"mode"`
	Connection      string `json:"connection"`
	PeerDisk        string `json:"peer_disk"`
	ConnectionError string `json:"connection_error"`
}

// ConnConnected is the connection state of a pair whose link is up and
// caught up: writes are replicated as they happen.
const ConnConnected = "Connected"

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
		return nil
	})
}

// VolumeName is the name of the volume v is the state of.
func (v VolumeStatus) VolumeName() string { return v.Name }

// findVolume returns the state of volume name.
func findVolume(vs []VolumeStatus, name string) (VolumeStatus, error) {
	return benchutil.FindVolume(vs, name, ErrStatusOutput)
}

package durable

import (
	"bytes"
	"encoding/json"
	"fmt"
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

package benchutil

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DecodeArray decodes a JSON array of at most max objects of type T, one
// at a time (a runaway answer must not make the harness allocate without
// bound), calling check on each. Every error wraps errFormat: the input is
// not an array, an element does not decode or fails check, there are more
// than max, or data follows the array. Unknown fields are ignored.
func DecodeArray[T any](data []byte, max int, errFormat error, check func(*T) error) ([]T, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '[' {
		return nil, fmt.Errorf("%w: not a JSON array", errFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %w", errFormat, err)
	}
	var vs []T
	for dec.More() {
		if len(vs) == max {
			return nil, fmt.Errorf("%w: more than %d volumes", errFormat, max)
		}
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: %w", errFormat, err)
		}
		if err := check(&v); err != nil {
			return nil, fmt.Errorf("%w: %s", errFormat, err)
		}
		vs = append(vs, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %w", errFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the array", errFormat)
	}
	return vs, nil
}

// Named is a volume's state that knows its volume's name.
type Named interface{ VolumeName() string }

// FindVolume returns the state of volume name among vs; the error when
// there is none wraps errFormat.
func FindVolume[T Named](vs []T, name string, errFormat error) (T, error) {
	for _, v := range vs {
		if v.VolumeName() == name {
			return v, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("%w: no volume %q", errFormat, name)
}

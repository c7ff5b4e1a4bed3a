package config

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Size is a byte count that reads and writes in the units storage admins
// type: "10G", "512M", "4096", "1.5T". Units are binary (K = 1024), as in
// qemu-img and DRBD; "GiB"/"GB" spell the same unit. Decimal sizes are a
// common source of "my 10G disk is 9.3G" surprises, so we do not use them.
type Size int64

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"P", 50}, {"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}}

// ParseSize parses a size such as "10G", "512MiB", "4k" or "65536".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%w: empty size", ErrInvalid)
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "IB")
	u = strings.TrimSuffix(u, "B")
	shift := uint(0)
	for _, su := range sizeUnits {
		if strings.HasSuffix(u, su.suffix) {
			shift = su.shift
			u = strings.TrimSuffix(u, su.suffix)
			break
		}
	}
	u = strings.TrimSpace(u)
	if shift == 0 {
		n, err := strconv.ParseInt(u, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: size %q: want a number with an optional unit K, M, G, T, P", ErrInvalid, s)
		}
		return Size(n), nil
	}
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%w: size %q: want a number with an optional unit K, M, G, T, P", ErrInvalid, s)
	}
	v := f * float64(uint64(1)<<shift)
	if v >= 1<<63 {
		return 0, fmt.Errorf("%w: size %q is too large", ErrInvalid, s)
	}
	if v != float64(int64(v)) {
		return 0, fmt.Errorf("%w: size %q is not a whole number of bytes", ErrInvalid, s)
	}
	return Size(int64(v)), nil
}

// String formats the size with the largest binary unit that divides it.
func (s Size) String() string {
	for _, su := range sizeUnits {
		if s != 0 && int64(s)%(1<<su.shift) == 0 {
			return strconv.FormatInt(int64(s)>>su.shift, 10) + su.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalText lets sizes appear as "10G" or 10737418240 in YAML.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// UnmarshalYAML parses a size and, on error, says where it was (Parse
// turns the position into the field's name).
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if err := s.UnmarshalText([]byte(n.Value)); err != nil {
		return &posError{line: n.Line, col: n.Column, err: err}
	}
	return nil
}

// posError is a value error at a position of the YAML source.
type posError struct {
	line, col int
	err       error
}

func (e *posError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *posError) Unwrap() error { return e.err }

// keyAt returns the mapping key whose value starts at line:col of src
// ("" if it cannot tell).
func keyAt(src []byte, line, col int) string {
	lines := strings.Split(string(src), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	l := lines[line-1]
	if col < 1 || col > len(l)+1 {
		return ""
	}
	before := strings.TrimRight(l[:col-1], " \t")
	if !strings.HasSuffix(before, ":") {
		return ""
	}
	before = strings.TrimSuffix(before, ":")
	i := strings.LastIndexAny(before, "{,[ \t-")
	return strings.Trim(before[i+1:], `"'`)
}

// MarshalText writes the human form.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Set and Type make Size usable as a pflag value.
func (s *Size) Set(v string) error { return s.UnmarshalText([]byte(v)) }

// Type names the flag type in help output.
func (s *Size) Type() string { return "size" }

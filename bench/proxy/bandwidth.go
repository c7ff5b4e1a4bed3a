package proxy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// bandwidthUnits maps a lower-cased unit to bytes per second. Decimal
// prefixes are powers of 1000, "i" prefixes powers of 1024, and "bit"
// units divide by 8: link speeds are usually quoted in bits, disk and
// replication rates in bytes, and both must be spelled without ambiguity.
var bandwidthUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
	"bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
}

// ParseBandwidth parses a rate in bytes per second: "0" or "unlimited",
// "1500000", "100M", "100MB/s", "64KiB", "1.5G", "100Mbit" (= 12.5 MB/s).
// A unit written with a lower-case b other than "bit" ("100Mb") is
// refused because it reads as bits to some people and bytes to others.
// A non-zero rate must come to at least 1 byte per second.
func ParseBandwidth(s string) (int64, error) {
	in := s
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unlimited") {
		return 0, nil
	}
	s = strings.TrimSuffix(s, "/s")
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, fmt.Errorf("%w: %q: want a number with an optional unit, e.g. 100M, 64KiB, 1Gbit", ErrBandwidth, in)
	}
	lower := strings.ToLower(unit)
	if strings.HasSuffix(unit, "b") && !strings.HasSuffix(lower, "bit") {
		return 0, fmt.Errorf("%w: %q: lower-case b is ambiguous, write B (bytes) or bit", ErrBandwidth, in)
	}
	mult, ok := bandwidthUnits[lower]
	if !ok {
		return 0, fmt.Errorf("%w: %q: unknown unit %q", ErrBandwidth, in, unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %v", ErrBandwidth, in, err)
	}
	r := v * mult
	if math.IsNaN(r) || math.IsInf(r, 0) || r >= math.MaxInt64 {
		return 0, fmt.Errorf("%w: %q: out of range", ErrBandwidth, in)
	}
	if r != 0 && r < 1 {
		return 0, fmt.Errorf("%w: %q: below 1 byte/s", ErrBandwidth, in)
	}
	return int64(math.Round(r)), nil
}

// FormatBandwidth renders a rate so that ParseBandwidth gives it back
// exactly: the largest decimal unit that divides it, else plain bytes.
func FormatBandwidth(bps int64) string {
	if bps <= 0 {
		return "unlimited"
	}
	for _, u := range []struct {
		div  int64
		name string
	}{{1e9, "GB/s"}, {1e6, "MB/s"}, {1e3, "KB/s"}} {
		if bps%u.div == 0 {
			return strconv.FormatInt(bps/u.div, 10) + u.name
		}
	}
	return strconv.FormatInt(bps, 10) + "B/s"
}

package config

import (
	"errors"
	"strings"
	"testing"
)

func TestResyncSettings(t *testing.T) {
	const pre = "volumes: [{name: a, backend: {type: mem, size: 1M}, resync: {"
	c, err := Parse([]byte(pre + "region_size: 4M, chunk_size: 16K, rate: 100M}}]"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Volumes[0].Resync; r.RegionSize != 4<<20 || r.ChunkSize != 16<<10 || r.Rate != 100<<20 {
		t.Fatalf("parsed %+v", r)
	}
	for in, want := range map[string]string{
		"region_size: 3M":                  "volumes[0].resync.region_size",
		"region_size: 32K":                 "volumes[0].resync.region_size",
		"region_size: 8M":                  "volumes[0].resync.region_size",
		"chunk_size: 2K":                   "volumes[0].resync.chunk_size",
		"chunk_size: 100K":                 "volumes[0].resync.chunk_size",
		"chunk_size: 1M, region_size: 64K": "volumes[0].resync.chunk_size",
		"chunk_size: 2M":                   "volumes[0].resync.chunk_size",
		"rate: -1":                         "line 1: rate: ",
		"chunk: 4K":                        "chunk",
	} {
		_, err := Parse([]byte(pre + in + "}}]"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %s", in, err, want)
		}
	}
}

package config

import "fmt"

// Resync configures block resync and online verify of a replicated volume.
type Resync struct {
	// RegionSize is the granularity of the dirty-region map the primary
	// keeps while the peer is away past the journal bound: a power of two
	// from 64K to 4M. Default 1M.
	RegionSize Size `yaml:"region_size,omitempty"`
	// ChunkSize is the unit hashed and compared: a power of two from 4K
	// to 1M, at most region_size. Default 64K. Chunks that differ are
	// compared again in 4K blocks, so only differing 4K blocks travel.
	ChunkSize Size `yaml:"chunk_size,omitempty"`
	// Rate limits the bytes a resync or verify compares per second (0 or
	// unset: unlimited). `twinblock resync --rate` changes it at run time.
	Rate Size `yaml:"rate,omitempty"`
}

func isPow2(n Size) bool { return n > 0 && n&(n-1) == 0 }

func (r Resync) validate(field string) error {
	if r.RegionSize != 0 && (!isPow2(r.RegionSize) || r.RegionSize < 64<<10 || r.RegionSize > 4<<20) {
		return fmt.Errorf("%w: %s.region_size: %s must be a power of two from 64K to 4M", ErrInvalid, field, r.RegionSize)
	}
	if r.ChunkSize != 0 && (!isPow2(r.ChunkSize) || r.ChunkSize < 4<<10 || r.ChunkSize > 1<<20) {
		return fmt.Errorf("%w: %s.chunk_size: %s must be a power of two from 4K to 1M", ErrInvalid, field, r.ChunkSize)
	}
	region, chunk := r.RegionSize, r.ChunkSize
	if region == 0 {
		region = 1 << 20
	}
	if chunk == 0 {
		chunk = 64 << 10
	}
	if chunk > region {
		return fmt.Errorf("%w: %s.chunk_size: %s is larger than region_size %s", ErrInvalid, field, chunk, region)
	}
	if r.Rate < 0 {
		return fmt.Errorf("%w: %s.rate: must not be negative", ErrInvalid, field)
	}
	return nil
}

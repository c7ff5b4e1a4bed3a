//go:build race

package nbd

// raceEnabled: see sockIO. Under the race detector, read and write go
// through package syscall, whose annotations tell the detector that a
// write on a socket happens before the read of the data on the other end;
// a raw system call would hide that and yield false reports.
const raceEnabled = true

package benchutil

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Command is a short command (twinblock create, certs, status, df) that
// a harness runs to the end.
type Command struct {
	Argv    []string
	Timeout time.Duration
	// Err is wrapped by the error of a failed run, which reads
	// "ERR: COMMAND LINE: CAUSE: LAST STDERR".
	Err error
	// Quote renders Argv in that error.
	Quote func(argv []string) string
}

// Output runs the command under its timeout and returns its standard
// output.
func (c Command) Output(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	var stderr bench.TailBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = bench.ChildProcAttr()
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timeout %s)", ctx.Err(), c.Timeout)
		}
		return out, fmt.Errorf("%w: %s: %w: %s", c.Err, c.Quote(c.Argv), err, bench.OneLine(stderr.String()))
	}
	return out, nil
}

// QuoteArgs renders argv for a shell: an argument that is empty or holds
// one of the characters of special is single-quoted.
func QuoteArgs(argv []string, special string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, special) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

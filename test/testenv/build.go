package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BuildOptions say how to build the twinblock binary under test.
type BuildOptions struct {
	Tags string   // -tags value; "" builds without tags
	Env  []string // added to the go tool's environment (e.g. CGO_ENABLED=1)
	// Timeout bounds the whole build; 5 minutes when zero (the build
	// cache makes it quick after the first time).
	Timeout time.Duration
}

// goTool prefers the go binary of GOROOT (the one running the tests) to
// the first on PATH.
func goTool() (string, error) {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go tool not on PATH: %w", err)
	}
	return p, nil
}

// BuildTwinblock builds ./cmd/twinblock of the module the working
// directory is in into dir and returns the binary's path.
func BuildTwinblock(dir string, o BuildOptions) (string, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module (go env GOMOD is empty)")
	}
	bin := filepath.Join(dir, "twinblock")
	args := []string{"build"}
	if o.Tags != "" {
		args = append(args, "-tags", o.Tags)
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, "-o", bin, "./cmd/twinblock")...)
	cmd.Dir = filepath.Dir(gomod)
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// TempBuild is BuildTwinblock into a new temporary directory (named with
// prefix) for a TestMain; remove deletes it and is never nil.
func TempBuild(prefix string, o BuildOptions) (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", func() {}, err
	}
	remove = func() { os.RemoveAll(dir) }
	bin, err = BuildTwinblock(dir, o)
	return bin, remove, err
}

// MainWithBuild is the body of a TestMain for a package some of whose
// tests run the binary: unless -short, it builds it first and stores the
// binary's path in *bin, or why it could not in *buildErr (those tests
// then fail or skip as they see fit), runs the tests and removes the
// binary.
func MainWithBuild(m *testing.M, prefix string, bin *string, buildErr *error) int {
	flag.Parse()
	remove := func() {}
	if !testing.Short() {
		*bin, remove, *buildErr = TempBuild(prefix, BuildOptions{})
	}
	defer remove()
	return m.Run()
}

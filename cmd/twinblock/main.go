// Command twinblock is the twinblock daemon and its admin CLI.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "twinblock:", err)
		os.Exit(1)
	}
}

package benchutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Head is the start of a report's Markdown: the title, when and how the
// run was started, and the machine line.
type Head struct {
	Title   string
	Date    time.Time
	Command string // omitted when ""
	NProc   int
	CPU     string // omitted when ""
	// Rest follows the CPU on the machine line: ", kernel ..." and what
	// else the harness records.
	Rest               string
	LoadStart, LoadEnd string // omitted when LoadStart is ""
}

// Write appends the head to b, ending with the machine line's newline.
func (h Head) Write(b *strings.Builder) {
	fmt.Fprintf(b, "# %s\n\n", h.Title)
	fmt.Fprintf(b, "- Date: %s\n", h.Date.Format(time.RFC3339))
	if h.Command != "" {
		fmt.Fprintf(b, "- Command: `%s`\n", h.Command)
	}
	fmt.Fprintf(b, "- Machine: %d CPUs", h.NProc)
	if h.CPU != "" {
		fmt.Fprintf(b, " (%s)", h.CPU)
	}
	b.WriteString(h.Rest)
	if h.LoadStart != "" {
		fmt.Fprintf(b, "; load average %s at start, %s at end", h.LoadStart, h.LoadEnd)
	}
	b.WriteString("\n")
}

// WriteResults appends the targets met with their table, the medians
// table and, when there are any, the notes as a list.
func WriteResults(b *strings.Builder, met, total int, targets, medians string, notes []string) {
	fmt.Fprintf(b, "## Targets: %d of %d met\n\n", met, total)
	b.WriteString(targets)
	b.WriteString("\n## Medians\n\n")
	b.WriteString(medians)
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
}

// WriteFiles writes a report into dir, creating it: NAME.json (report
// through bench.WriteJSON) and NAME.md (markdown).
func WriteFiles(dir, name string, report any, markdown string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := bench.WriteJSON(filepath.Join(dir, name+".json"), report); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".md"), []byte(markdown), 0o644)
}

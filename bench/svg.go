package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// plotColors are per-server bar colours, by position in ServerNames.
var plotColors = map[string]string{
	ServerTwinblock: "#2b6cb0",
	ServerGoNBD:     "#d69e2e",
}

type plotGroup struct {
	label  [2]string // workload, transport
	ratios map[string]float64
}

// plotGroups collects, per (workload, transport), each non-baseline
// server's IOPS ratio to nbdkit.
func (r *Report) plotGroups() ([]plotGroup, []string) {
	var groups []plotGroup
	idx := map[[2]string]int{}
	var servers []string
	for _, row := range r.Rows() {
		c := row.Cell
		if c.Server == Baseline || row.IOPSRatio <= 0 {
			continue
		}
		k := [2]string{c.Workload, string(c.Transport)}
		i, ok := idx[k]
		if !ok {
			i = len(groups)
			idx[k] = i
			groups = append(groups, plotGroup{label: k, ratios: map[string]float64{}})
		}
		groups[i].ratios[c.Server] = row.IOPSRatio
	}
	for _, s := range ServerNames {
		if s == Baseline {
			continue
		}
		for _, g := range groups {
			if _, ok := g.ratios[s]; ok {
				servers = append(servers, s)
				break
			}
		}
	}
	return groups, servers
}

func (r *Report) hasPlot() bool {
	g, _ := r.plotGroups()
	return len(g) > 0
}

// SVG draws the median IOPS of each server relative to nbdkit, one group
// of bars per (workload, transport), with lines at 1.0 (nbdkit) and at the
// target. It is self-contained SVG: no fonts or scripts to fetch.
func (r *Report) SVG() string {
	groups, servers := r.plotGroups()
	const (
		left, right, top, bottom = 60.0, 20.0, 50.0, 70.0
		barW, gap                = 26.0, 30.0
		plotH                    = 300.0
	)
	groupW := float64(max(len(servers), 1))*barW + gap
	w := left + right + float64(len(groups))*groupW
	w = math.Max(w, 420)
	h := top + plotH + bottom
	ymax := 1.2
	for _, g := range groups {
		for _, v := range g.ratios {
			ymax = math.Max(ymax, v*1.1)
		}
	}
	ymax = math.Ceil(ymax*5) / 5
	y := func(v float64) float64 { return top + plotH - v/ymax*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">Median IOPS relative to nbdkit (same run)</text>`+"\n", left)
	// Axis and grid.
	for v := 0.0; v <= ymax+1e-9; v += 0.2 {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#e2e8f0"/>`+"\n", left, w-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.1f×</text>`+"\n", left-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#4a5568" stroke-width="1.5"/>`+"\n", left, w-right, y(1), y(1))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#4a5568">nbdkit</text>`+"\n", w-right, y(1)-4)
	fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#c53030" stroke-dasharray="6 4"/>`+"\n", left, w-right, y(Target), y(Target))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#c53030">target %.1f×</text>`+"\n", w-right, y(Target)+14, Target)
	// Bars.
	for gi, g := range groups {
		x0 := left + float64(gi)*groupW + gap/2
		for si, s := range servers {
			v, ok := g.ratios[s]
			if !ok {
				continue
			}
			x := x0 + float64(si)*barW
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s %s %s: %.2f×</title></rect>`+"\n",
				x, y(v), barW-4, y(0)-y(v), colorFor(s), html.EscapeString(s), html.EscapeString(g.label[0]), html.EscapeString(g.label[1]), v)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.2f</text>`+"\n", x+(barW-4)/2, y(v)-3, v)
		}
		cx := x0 + float64(len(servers))*barW/2
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", cx, top+plotH+16, html.EscapeString(g.label[0]))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", cx, top+plotH+28, html.EscapeString(g.label[1]))
	}
	// Legend.
	for si, s := range servers {
		lx := left + float64(si)*110
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/>`+"\n", lx, h-24, colorFor(s))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", lx+16, h-14, html.EscapeString(s))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func colorFor(server string) string {
	if c, ok := plotColors[server]; ok {
		return c
	}
	return "#718096"
}

package cli

import (
	"bufio"
	"io"
	"strings"
)

// writeTable prints rows under header in columns three spaces apart. It sizes the
// columns itself instead of using text/tabwriter, which is several times slower on the
// 100,000-row policy lists of a large foundation.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	line := func(cells []string) {
		for i, c := range cells {
			bw.WriteString(c)
			if i < len(cells)-1 {
				bw.WriteString(strings.Repeat(" ", widths[i]-len(c)+3))
			}
		}
		bw.WriteByte('\n')
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return bw.Flush()
}

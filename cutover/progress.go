package cutover

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// progressBar draws one self-overwriting line on a terminal; on anything
// else it draws nothing (logs and Status carry the progress).
type progressBar struct {
	mu    sync.Mutex
	w     io.Writer
	drawn bool
}

func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &progressBar{}
	}
	return &progressBar{w: w}
}

func (p *progressBar) draw(s *Status) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.State != StateCopying && s.State != StateVerifying {
		if p.drawn {
			fmt.Fprintln(p.w)
			p.drawn = false
		}
		return
	}
	total := max(s.Keys.Total, 1)
	done := s.Keys.Copied + s.Keys.Errors + s.Keys.Conflicts
	if s.State == StateVerifying {
		done = s.Keys.Verified + s.Keys.Errors + s.Keys.Conflicts
	}
	const width = 30
	fill := min(width, done*width/total)
	fmt.Fprintf(p.w, "\r%-9s [%s%s] %d/%d  verified %d  failed %d ",
		s.State, strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, s.Keys.Total,
		s.Keys.Verified, s.Keys.Errors+s.Keys.Conflicts)
	p.drawn = true
}

func (p *progressBar) finish() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

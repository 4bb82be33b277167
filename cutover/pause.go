package cutover

import (
	"context"
	"fmt"
)

// SetPaused pauses (`cutover pause`) or resumes (`cutover resume`) the migration's background
// work: paused, the copy, verification, catch-up, backfill and rights sync take up no further
// key (those in progress finish) and the automatic switch and finalize wait. It is a run-level
// flag in the journal's header, not a state (the state says where keys are served, which a
// pause does not change), kept across a restart and by a driver elected meanwhile. A switch,
// rollback or finalize the operator asks for, and probation's rollback, still run (within the
// pace).
func (c *Controller) SetPaused(ctx context.Context, paused bool) error {
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if err := c.fleet.mustDrive(); err != nil {
		return err
	}
	if st := c.book.state(); paused && !st.inMigration() {
		return fmt.Errorf("%w: nothing to pause in state %s", ErrWrongState, st)
	}
	c.book.edit(func(h *Header) { h.Paused = paused })
	c.sides.pace.setPaused(paused)
	if err := c.book.flush(c.fleet.writesJournal()); err != nil {
		return err
	}
	c.log.Info("cutover: background work "+map[bool]string{true: "paused", false: "resumed"}[paused], "state", c.book.state())
	return nil
}

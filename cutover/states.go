package cutover

import (
	"errors"
	"fmt"
)

// The state table: every move the machine may take, in one place. transition refuses any other,
// and the start-up checks use the same table to judge whether what the backends record (the
// markers) and what a journal or the fleet store says can both be true.
//
//	serving, rolled_back, finalized ─start─▶ copying
//	copy_failed, verify_failed ─start (retry)─▶ copying
//	copying ─▶ copy_failed | verifying
//	verifying ─▶ verify_failed | verified | shadowing
//	shadowing ─▶ verify_failed | verified
//	verified ─switch─▶ switched;  verified ─final catch-up failed─▶ verify_failed
//	switched ─▶ finalized | rolling_back;  switched ─route refused─▶ verified
//	finalized ─rollback─▶ rolling_back ─▶ rolled_back
//	copying, copy_failed, verifying, verify_failed, shadowing, verified ─rollback─▶ rolled_back
var moves = map[State][]State{
	StateServing:      {StateCopying},
	StateRolledBack:   {StateCopying},
	StateFinalized:    {StateCopying, StateRollingBack},
	StateCopyFailed:   {StateCopying, StateRolledBack},
	StateVerifyFailed: {StateCopying, StateRolledBack},
	StateCopying:      {StateCopyFailed, StateVerifying, StateRolledBack},
	StateVerifying:    {StateVerifyFailed, StateVerified, StateShadowing, StateRolledBack},
	StateShadowing:    {StateVerifyFailed, StateVerified, StateRolledBack},
	StateVerified:     {StateSwitched, StateVerifyFailed, StateRolledBack},
	StateSwitched:     {StateFinalized, StateRollingBack, StateVerified},
	StateRollingBack:  {StateRolledBack},
}

// ErrIllegalMove is returned (wrapped) for a move the state table does not have.
var ErrIllegalMove = errors.New("cutover: illegal state move")

// canMove reports whether from → to is one move of the table.
func canMove(from, to State) bool {
	for _, s := range moves[from] {
		if s == to {
			return true
		}
	}
	return false
}

// checkMove is canMove as an error naming the move.
func checkMove(from, to State) error {
	if canMove(from, to) {
		return nil
	}
	return fmt.Errorf("%w: %s → %s", ErrIllegalMove, from, to)
}

package cutover

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// The state table: every move the machine may take, in one place. A move is (state, event →
// state): the state it leaves, what happened, the state it enters. The ledger takes a move only
// through this table (ledger.move refuses any other with a *MoveError), and the start-up checks
// use the same table to judge whether what the backends record (the markers) and what a journal
// or the fleet store says can both be true. Which backend serves in each state is the route
// table below; what must hold before a move is taken is checked by the code that asks for it
// (needs says what, for the reader and for docs/architecture.md).

// event is what happened to move the machine.
type event string

// Events.
const (
	evStart        event = "start"         // an operator starts a migration afresh
	evRetry        event = "retry"         // an operator starts again after a failure
	evCopyFailed   event = "copy failed"   // a key could not be copied
	evCopied       event = "copied"        // every key is on the target
	evVerifyFailed event = "verify failed" // a key failed verification or the shadow
	evShadow       event = "shadow"        // verified, and live Decrypts are to be mirrored
	evVerified     event = "verified"      // every key verified (and shadowed)
	evSwitch       event = "switch"        // the target serves
	evRouteRefused event = "route refused" // the switch was journaled but the proxy refused its route
	evFinalize     event = "finalize"      // the target serves alone
	evRollback     event = "rollback"      // back to the source
	evRolledBack   event = "rolled back"   // the last copy-back pass is done
)

// keyEffect is what a move does to the journal's per-key records.
type keyEffect int

const (
	keysKept   keyEffect = iota
	keysReset            // a new migration: key records, created notes and in-memory marks go
	keysFailed           // the failed keys' records go (they are tried again)
)

// rule is one row of the table.
type rule struct {
	from  []State
	on    event
	to    State
	keys  keyEffect
	needs string
}

var table = []rule{
	{from: []State{StateServing, StateRolledBack, StateFinalized}, on: evStart, to: StateCopying, keys: keysReset,
		needs: "no run in progress; the backend serving now is the configured source"},
	{from: []State{StateCopyFailed, StateVerifyFailed}, on: evRetry, to: StateCopying, keys: keysFailed,
		needs: "no run in progress"},
	{from: []State{StateCopying}, on: evCopyFailed, to: StateCopyFailed,
		needs: "the copy and its catch-up ended with a key not copied"},
	{from: []State{StateCopying}, on: evCopied, to: StateVerifying,
		needs: "every selected key, and every key created meanwhile, copied"},
	{from: []State{StateVerifying, StateShadowing, StateVerified}, on: evVerifyFailed, to: StateVerifyFailed,
		needs: "a key failed verification, a mirrored Decrypt differed, or the final catch-up failed"},
	{from: []State{StateVerifying}, on: evShadow, to: StateShadowing,
		needs: "every key verified, the target answers, a shadow asked for; the mirror is open"},
	{from: []State{StateVerifying, StateShadowing}, on: evVerified, to: StateVerified,
		needs: "every key verified and the target answers; after a shadow, no mismatch"},
	{from: []State{StateVerified}, on: evSwitch, to: StateSwitched,
		needs: "final catch-up verified, the target answers and holds a migrated key, every member serves the verified epoch"},
	{from: []State{StateSwitched}, on: evRouteRefused, to: StateVerified,
		needs: "the switch was journaled but the proxy refused its route"},
	{from: []State{StateSwitched}, on: evFinalize, to: StateFinalized,
		needs: "probation passed (or forced with a reason), every source key verified on the target, every member serves the switched epoch"},
	{from: []State{StateCopying, StateCopyFailed, StateVerifying, StateVerifyFailed, StateShadowing, StateVerified}, on: evRollback, to: StateRolledBack,
		needs: "every member serves the current epoch"},
	{from: []State{StateSwitched, StateFinalized}, on: evRollback, to: StateRollingBack,
		needs: "first copy-back pass done (keys created on the target, rights, states), every member serves the current epoch"},
	{from: []State{StateRollingBack}, on: evRolledBack, to: StateRolledBack,
		needs: "second copy-back pass done, every member serves rolling_back"},
}

// side names a backend of the migration in the route table.
type side int

const (
	sideNone side = iota
	sideSource
	sideTarget
)

// routes says which side serves (and which is the fallback) in the states where it is not the
// source alone.
var routes = map[State][2]side{
	StateSwitched:    {sideTarget, sideSource},
	StateFinalized:   {sideTarget, sideNone},
	StateRollingBack: {sideSource, sideTarget}, // keys created on the target while the first copy-back pass ran are still served
}

// routeSides is the route of st: primary and fallback sides.
func routeSides(st State) (primary, fallback side) {
	if r, ok := routes[st]; ok {
		return r[0], r[1]
	}
	return sideSource, sideNone
}

// ErrIllegalMove is what a *MoveError is (errors.Is): a move the state table does not have.
var ErrIllegalMove = newError(http.StatusConflict, "illegal_move", "cutover: illegal state move")

// MoveError is a move the state table refuses.
type MoveError struct {
	From  State
	Event string
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("%v: %q in state %s (it moves from %s)", ErrIllegalMove, e.Event, e.From, strings.Join(statesOf(event(e.Event)), ", "))
}

// Is makes a MoveError an ErrIllegalMove.
func (e *MoveError) Is(target error) bool { return target == ErrIllegalMove }

// StatusCode is the HTTP status the admin API answers a refused move with.
func (e *MoveError) StatusCode() int { return ErrIllegalMove.status }

// Code is ErrIllegalMove's.
func (e *MoveError) Code() string { return ErrIllegalMove.code }

// next is the state ev moves from to, or a *MoveError.
func next(from State, ev event) (State, keyEffect, error) {
	for _, r := range table {
		if r.on == ev && slices.Contains(r.from, from) {
			return r.to, r.keys, nil
		}
	}
	return from, keysKept, &MoveError{From: from, Event: string(ev)}
}

// canMove reports whether some event moves from → to.
func canMove(from, to State) bool {
	for _, r := range table {
		if r.to == to && slices.Contains(r.from, from) {
			return true
		}
	}
	return false
}

// statesOf lists the states ev moves from.
func statesOf(ev event) []string {
	var out []string
	for _, r := range table {
		if r.on == ev {
			for _, s := range r.from {
				out = append(out, string(s))
			}
		}
	}
	return out
}

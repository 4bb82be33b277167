package cutover

import "net/http"

// Error is an error of the controller's that carries to the edge the HTTP status the admin API
// answers it with and a stable code the admin client maps back to it (errors.Is still compares
// with the sentinel below). Wrapped with %w, it keeps both.
type Error struct {
	status int
	code   string
	msg    string
}

func newError(status int, code, msg string) *Error {
	return &Error{status: status, code: code, msg: msg}
}

func (e *Error) Error() string { return e.msg }

// StatusCode is the HTTP status the admin API answers e with.
func (e *Error) StatusCode() int { return e.status }

// Code is e's stable name in the admin API's error replies.
func (e *Error) Code() string { return e.code }

// Errors returned by control operations.
var (
	// ErrWrongState: the operation is not allowed in the current state.
	ErrWrongState = newError(http.StatusConflict, "wrong_state", "cutover: wrong state")
	// ErrRunning: a migration run is already in progress.
	ErrRunning = newError(http.StatusConflict, "running", "cutover: a migration is already running")
	// ErrRefused: a rollback or finalize was refused to avoid stranding keys.
	ErrRefused = newError(http.StatusConflict, "refused", "cutover: refused")
	// ErrUnreachable: the target did not answer the pre-switch check.
	ErrUnreachable = newError(http.StatusServiceUnavailable, "unreachable", "cutover: target unreachable")
	// ErrNotDriver: an operator action reached a fleet member that does not drive the migration
	// (the admin API forwards it to the driver; a call that still lands here is retried).
	ErrNotDriver = newError(http.StatusServiceUnavailable, "not_driver", "cutover: this replica does not drive the migration")
	// ErrStopped: the controller is not running (Run has not started, or it has returned).
	ErrStopped = newError(http.StatusServiceUnavailable, "stopped", "cutover: the controller is not running")
	// ErrFenced is returned by a fenced Storage when the writer lost the right to write (another
	// driver was elected, or the epoch moved under it). The write did not happen.
	ErrFenced = newError(http.StatusServiceUnavailable, "fenced", "cutover: write fenced: not the driver of this epoch")
	// ErrMemberAlive: Forget was asked for a member whose lease still lives.
	ErrMemberAlive = newError(http.StatusConflict, "member_alive", "cutover: member is alive")
	// ErrUnknownMember: Forget was asked for a member the fleet never registered.
	ErrUnknownMember = newError(http.StatusNotFound, "unknown_member", "cutover: no such member")
	// ErrOtherPair: a start or plan named another source and target than the controller's.
	ErrOtherPair = newError(http.StatusConflict, "other_pair", "cutover: another pair of backends")
	// ErrBackendAccess: a backend's KMIP side (its ckms_config) does not answer, or does not
	// accept the credential: nothing of the migration can run on it.
	ErrBackendAccess = newError(http.StatusServiceUnavailable, "backend_access", "cutover: a backend's KMIP access does not work")
	// ErrSharedStorage refuses what makes no sense when source and target share storage.
	ErrSharedStorage = newError(http.StatusConflict, "shared_storage", "cutover: source and target share storage")
)

// ErrorByCode returns the sentinel error whose Code is code (nil if none): the admin client
// turns an error reply back into it.
func ErrorByCode(code string) error {
	for _, e := range []*Error{ErrWrongState, ErrRunning, ErrRefused, ErrUnreachable, ErrNotDriver, ErrStopped,
		ErrFenced, ErrMemberAlive, ErrUnknownMember, ErrSharedStorage, ErrIllegalMove, ErrOtherPair, ErrBackendAccess} {
		if e.code == code {
			return e
		}
	}
	return nil
}

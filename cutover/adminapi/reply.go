package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// The admin API's replies have one renderer, shared by the API's handlers and by the fleet's
// forwarding of operator calls (package app): an error is written with the HTTP status it carries
// (a StatusCode method anywhere in its chain: the controller's errors carry theirs, StatusError
// the forwarding's), its message, and its stable code when it has one. A context that ended is
// 504; any other error 500.

// StatusError is an error with the HTTP status the admin API answers it with.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string   { return e.Msg }
func (e *StatusError) StatusCode() int { return e.Status }

// Errorf makes a StatusError.
func Errorf(status int, format string, args ...any) error {
	return &StatusError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// StatusOf is the HTTP status err carries, if it carries one.
func StatusOf(err error) (int, bool) {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		return sc.StatusCode(), true
	}
	return 0, false
}

// errorReply is an error reply's body.
type errorReply struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"` // the controller's stable name of the error (cutover.ErrorByCode)
}

// ErrorReply is the status and the JSON body err is answered with.
func ErrorReply(err error) (int, []byte) {
	status, ok := StatusOf(err)
	switch {
	case ok:
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	default:
		status = http.StatusInternalServerError
	}
	r := errorReply{Error: err.Error()}
	var coded interface{ Code() string }
	if errors.As(err, &coded) {
		r.Code = coded.Code()
	}
	body, _ := json.Marshal(r)
	return status, append(body, '\n')
}

// WriteError writes err as an error reply.
func WriteError(w http.ResponseWriter, err error) {
	status, body := ErrorReply(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteJSON writes v as the reply, with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

package cosmian

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Kinds of server errors; a *KMSError unwraps to one of them, so errors.Is(err, ErrNotFound)
// works on anything the client returns.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrAccessDenied  = errors.New("access denied")
	ErrWrongState    = errors.New("wrong key lifecycle state")
	ErrSensitive     = errors.New("key is sensitive")
	// ErrNotExtractable: the key's Extractable attribute is false or NeverExtractable true, and
	// the server (Cosmian ≥ 5.28.0, GHSA-8mmx-f92q-2gq8) refuses to Get or Export it at all,
	// wrapped or not: an export/import migration cannot move it.
	ErrNotExtractable = errors.New("key is not extractable")
	ErrInvalidRequest = errors.New("invalid request")
	ErrServer         = errors.New("server error")
)

// Client-side conditions (not server replies).
var (
	// ErrWrapped: Export asked for the key unwrapped but the server returned it wrapped.
	ErrWrapped = errors.New("cosmian: key came back wrapped")
	// ErrBadResponse: the reply is not the shape Cosmian sends for this operation.
	ErrBadResponse = errors.New("cosmian: unexpected response")
	// ErrLocateIncomplete: Locate could not page past the server's cap because the server
	// ignores OffsetItems (Cosmian ≤ 5.26 does); the ids returned so far are a prefix.
	ErrLocateIncomplete = errors.New("cosmian: locate results incomplete (server ignores OffsetItems)")
)

// maxErrorMessage bounds the server text kept in a KMSError.
const maxErrorMessage = 512

// KMSError is an error reply from a Cosmian server: on /kmip/2_1 a 422/401 text/html body
// (e.g. "Object_Not_Found: object not found for identifier x", "Access denied: …"), a 5xx
// "Internal server error", or a failed batch item of a ResponseMessage.
type KMSError struct {
	Op         string // operation, e.g. "Export" or "access/grant"
	HTTPStatus int
	Message    string // server text, bounded and sanitised; never request data or key material
	Kind       error  // one of ErrNotFound … ErrServer
	// Where names the server and the file that configured the client ("" unknown).
	Where string
}

func (e *KMSError) Error() string {
	if e.Where != "" {
		return fmt.Sprintf("cosmian: %s: %v (HTTP %d): %s [%s]", e.Op, e.Kind, e.HTTPStatus, e.Message, e.Where)
	}
	return fmt.Sprintf("cosmian: %s: %v (HTTP %d): %s", e.Op, e.Kind, e.HTTPStatus, e.Message)
}

// Unwrap returns the Kind.
func (e *KMSError) Unwrap() error { return e.Kind }

func newKMSError(op string, status int, body []byte) *KMSError {
	msg := sanitizeMessage(body)
	return &KMSError{Op: op, HTTPStatus: status, Message: msg, Kind: classify(status, msg)}
}

// sanitizeMessage keeps at most maxErrorMessage bytes of printable text.
func sanitizeMessage(b []byte) string {
	if len(b) > 4*maxErrorMessage {
		b = b[:4*maxErrorMessage]
	}
	var sb strings.Builder
	for len(b) > 0 && sb.Len() < maxErrorMessage {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		switch {
		case r == utf8.RuneError && n <= 1:
			sb.WriteByte('?')
		case r == '\n' || r == '\r' || r == '\t':
			sb.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			sb.WriteByte('?')
		default:
			sb.WriteRune(r)
		}
	}
	s := strings.TrimSpace(sb.String())
	if len(b) > 0 {
		s += "…"
	}
	return s
}

// classify maps Cosmian's status and error text to a Kind. The texts are KmsError's Display
// forms in crate/server/src/error.rs ("<ErrorReason>: <msg>", "Access denied: …",
// "Item not found: …", "Invalid Request: …", "Database Error: …already exist…") and the status
// mapping in crate/server/src/routes/mod.rs (401 for Unauthorized, 422 for KMIP reasons, 5xx
// bodies replaced by "Internal server error").
func classify(status int, msg string) error {
	if status >= 500 || status == http.StatusTooManyRequests {
		return ErrServer
	}
	switch {
	case strings.Contains(msg, "already exist"):
		return ErrAlreadyExists
	case strings.Contains(msg, "Not_Extractable"):
		// 5.28.0 refuses with ResultReason Not_Extractable (release notes of 5.28.0, PR #1198).
		return ErrNotExtractable
	case strings.HasPrefix(msg, "Sensitive") || strings.Contains(msg, "Sensitive: "):
		return ErrSensitive
	case strings.Contains(msg, "Wrong_Key_Lifecycle_State") || strings.Contains(msg, "Object_Destroyed"):
		return ErrWrongState
	case status == http.StatusUnauthorized || status == http.StatusForbidden,
		strings.Contains(msg, "Access denied"), strings.Contains(msg, "not owned by"),
		strings.Contains(msg, "does not have permission"), strings.Contains(msg, "Permission_Denied"):
		return ErrAccessDenied
	case strings.Contains(msg, "Object_Not_Found"), strings.Contains(msg, "Item_Not_Found"),
		strings.Contains(msg, "Item not found"), strings.Contains(msg, "not found"):
		return ErrNotFound
	}
	return ErrInvalidRequest
}

// xksCreateKeyRefusal is the text of the XKS CreateKey refusal of Cosmian releases after 5.26
// (PR #1107, routes/aws_xks/key_metadata.rs): the key id exists on that server as a key without
// the aws-xks tag, and the server will not grant the XKS identity on it.
const xksCreateKeyRefusal = "already exists and is not an AWS XKS key"

// IsXKSCreateKeyRefusal reports whether an XKS error message is that refusal.
func IsXKSCreateKeyRefusal(msg string) bool { return strings.Contains(msg, xksCreateKeyRefusal) }

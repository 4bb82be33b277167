package xks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrorName is an XKS errorName (spec §"Errors").
type ErrorName string

// The errorName values of the XKS Proxy API spec v1.0.3, with their HTTP status.
const (
	ValidationException           ErrorName = "ValidationException"           // 400
	InvalidStateException         ErrorName = "InvalidStateException"         // 400
	InvalidCiphertextException    ErrorName = "InvalidCiphertextException"    // 400
	InvalidKeyUsageException      ErrorName = "InvalidKeyUsageException"      // 400
	AuthenticationFailedException ErrorName = "AuthenticationFailedException" // 401
	AccessDeniedException         ErrorName = "AccessDeniedException"         // 403
	KeyNotFoundException          ErrorName = "KeyNotFoundException"          // 404
	InvalidUriPathException       ErrorName = "InvalidUriPathException"       // 404
	ThrottlingException           ErrorName = "ThrottlingException"           // 429
	InternalException             ErrorName = "InternalException"             // 500
	UnsupportedOperationException ErrorName = "UnsupportedOperationException" // 501
	DependencyTimeoutException    ErrorName = "DependencyTimeoutException"    // 503
)

// Status returns the HTTP status the spec assigns to n; unknown names map to 500.
func (n ErrorName) Status() int {
	switch n {
	case ValidationException, InvalidStateException, InvalidCiphertextException, InvalidKeyUsageException:
		return http.StatusBadRequest
	case AuthenticationFailedException:
		return http.StatusUnauthorized
	case AccessDeniedException:
		return http.StatusForbidden
	case KeyNotFoundException, InvalidUriPathException:
		return http.StatusNotFound
	case ThrottlingException:
		return http.StatusTooManyRequests
	case UnsupportedOperationException:
		return http.StatusNotImplemented
	case DependencyTimeoutException:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Retryable reports whether AWS KMS treats n as retryable (spec error table).
func (n ErrorName) Retryable() bool {
	switch n {
	case ThrottlingException, DependencyTimeoutException, InternalException:
		return true
	}
	return false
}

// Known reports whether n is one of the spec's error names.
func (n ErrorName) Known() bool {
	_, ok := ParseErrorName(string(n))
	return ok
}

// ParseErrorName maps an exact (case-sensitive) spec error name to its ErrorName.
func ParseErrorName(s string) (ErrorName, bool) {
	switch n := ErrorName(s); n {
	case ValidationException, InvalidStateException, InvalidCiphertextException, InvalidKeyUsageException,
		AuthenticationFailedException, AccessDeniedException, KeyNotFoundException, InvalidUriPathException,
		ThrottlingException, InternalException, UnsupportedOperationException, DependencyTimeoutException:
		return n, true
	}
	return "", false
}

// Error is an XKS error carried to the edge. Message must be safe for AWS CloudWatch (never
// plaintext or key material); it is sanitised to printable ASCII and < 512 chars on write.
type Error struct {
	Name    ErrorName
	Message string
	Err     error // cause, for logs and errors.Is/As; never sent to AWS
	// HTTPStatus is the status received from a remote XKS endpoint (the Client fills it in,
	// e.g. Cosmian's 401/418); 0 for locally produced errors. It is not part of Is.
	HTTPStatus int
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Name))
	if e.HTTPStatus != 0 {
		b.WriteString(" (HTTP ")
		b.WriteString(strconv.Itoa(e.HTTPStatus))
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		// Errorf already put the wrapped text into Message.
		if s := e.Err.Error(); !strings.Contains(e.Message, s) {
			b.WriteString(": ")
			b.WriteString(s)
		}
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Name, so errors.Is(err, ErrKeyNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Name == e.Name
}

// Status is the spec HTTP status of e.Name.
func (e *Error) Status() int { return e.Name.Status() }

// Errorf builds an *Error whose Message is the formatted text; %w wraps (Err is the wrapped error).
func Errorf(name ErrorName, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := &Error{Name: name, Message: err.Error()}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		e.Err = u.Unwrap()
	case interface{ Unwrap() []error }:
		e.Err = err
	}
	return e
}

// Sentinels, one per error name, for errors.Is.
var (
	ErrValidation           = &Error{Name: ValidationException}
	ErrInvalidState         = &Error{Name: InvalidStateException}
	ErrInvalidCiphertext    = &Error{Name: InvalidCiphertextException}
	ErrInvalidKeyUsage      = &Error{Name: InvalidKeyUsageException}
	ErrAuthenticationFailed = &Error{Name: AuthenticationFailedException}
	ErrAccessDenied         = &Error{Name: AccessDeniedException}
	ErrKeyNotFound          = &Error{Name: KeyNotFoundException}
	ErrInvalidUriPath       = &Error{Name: InvalidUriPathException}
	ErrThrottling           = &Error{Name: ThrottlingException}
	ErrInternal             = &Error{Name: InternalException}
	ErrUnsupportedOperation = &Error{Name: UnsupportedOperationException}
	ErrDependencyTimeout    = &Error{Name: DependencyTimeoutException}
)

// NameOf returns the XKS error name for err: the Name of the first *Error in its chain; nil → "";
// context.DeadlineExceeded → DependencyTimeoutException; anything else → InternalException.
func NameOf(err error) ErrorName {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e != nil {
		if e.Name == "" {
			return InternalException
		}
		return e.Name
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return DependencyTimeoutException
	}
	return InternalException
}

// MessageOf returns the message that may go to AWS with NameOf(err) (see messageOf).
func MessageOf(err error) string { return messageOf(err, NameOf(err)) }

// messageOf returns the text that may go to AWS for err: an *Error's Message, a fixed text for a
// timeout, and nothing of a foreign error's text (it may hold internal details).
func messageOf(err error, name ErrorName) string {
	var e *Error
	if errors.As(err, &e) && e != nil && (e.Name == name || e.Name == "") {
		return e.Message
	}
	if name == DependencyTimeoutException {
		return "key manager did not answer in time"
	}
	return ""
}

// WriteError writes {"errorName":..., "errorMessage":...} with the spec status,
// Content-Type: application/json and Cache-Control: no-store. Unknown names are written as
// InternalException. It is the one writer of XKS error replies (the proxy's and the tests').
func WriteError(w http.ResponseWriter, err error) { WriteErrorStatus(w, 0, err) }

// WriteErrorStatus is WriteError with an explicit HTTP status (0 = the spec status of the
// name), for the few replies whose status the spec fixes apart from the name (405).
func WriteErrorStatus(w http.ResponseWriter, status int, err error) {
	name := NameOf(err)
	if !name.Known() {
		name = InternalException
	}
	if status == 0 {
		status = name.Status()
	}
	var buf [640]byte
	body := AppendErrorBody(buf[:0], name, messageOf(err, name))
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Shared header values (never modified): assigning them costs no allocation per reply.
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

// maxMessage is the longest errorMessage written: the spec wants fewer than 512 characters.
const maxMessage = 511

// AppendErrorBody appends an XKS error body to dst. msg is sanitised: every character outside
// printable ASCII becomes '?', and it is cut to 511 characters. An empty msg is omitted.
func AppendErrorBody(dst []byte, name ErrorName, msg string) []byte {
	dst = append(dst, `{"errorName":`...)
	dst = appendJSONString(dst, string(name))
	if msg != "" {
		dst = append(dst, `,"errorMessage":"`...)
		dst = appendSanitized(dst, msg)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// Sanitize returns msg as AppendErrorBody would send it (before JSON escaping).
func Sanitize(msg string) string {
	if isClean(msg) {
		return msg
	}
	b := make([]byte, 0, min(len(msg), maxMessage))
	n := 0
	for _, r := range msg {
		if n == maxMessage {
			break
		}
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		b = append(b, byte(r))
		n++
	}
	return string(b)
}

func isClean(s string) bool {
	if len(s) > maxMessage {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// appendSanitized appends the sanitised msg with JSON escaping of '"' and '\'.
func appendSanitized(dst []byte, msg string) []byte {
	n := 0
	for i := 0; i < len(msg) && n < maxMessage; n++ {
		c := msg[i]
		if c < utf8.RuneSelf {
			i++
		} else {
			_, size := utf8.DecodeRuneInString(msg[i:])
			i += size
			c = '?'
		}
		switch {
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '?')
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

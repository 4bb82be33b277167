package xks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestErrorNames(t *testing.T) {
	cases := []struct {
		name      ErrorName
		sentinel  *Error
		status    int
		retryable bool
	}{
		{ValidationException, ErrValidation, 400, false},
		{InvalidStateException, ErrInvalidState, 400, false},
		{InvalidCiphertextException, ErrInvalidCiphertext, 400, false},
		{InvalidKeyUsageException, ErrInvalidKeyUsage, 400, false},
		{AuthenticationFailedException, ErrAuthenticationFailed, 401, false},
		{AccessDeniedException, ErrAccessDenied, 403, false},
		{KeyNotFoundException, ErrKeyNotFound, 404, false},
		{InvalidUriPathException, ErrInvalidUriPath, 404, false},
		{ThrottlingException, ErrThrottling, 429, true},
		{InternalException, ErrInternal, 500, true},
		{UnsupportedOperationException, ErrUnsupportedOperation, 501, false},
		{DependencyTimeoutException, ErrDependencyTimeout, 503, true},
	}
	for _, tc := range cases {
		t.Run(string(tc.name), func(t *testing.T) {
			if tc.name.Status() != tc.status || tc.sentinel.Status() != tc.status {
				t.Errorf("status %d", tc.name.Status())
			}
			if tc.name.Retryable() != tc.retryable {
				t.Errorf("retryable %v", tc.name.Retryable())
			}
			if n, ok := ParseErrorName(string(tc.name)); !ok || n != tc.name || !tc.name.Known() {
				t.Errorf("ParseErrorName")
			}
			if tc.sentinel.Name != tc.name {
				t.Errorf("sentinel name %s", tc.sentinel.Name)
			}
			err := fmt.Errorf("ctx: %w", Errorf(tc.name, "x"))
			if !errors.Is(err, tc.sentinel) || NameOf(err) != tc.name {
				t.Errorf("errors.Is / NameOf")
			}
		})
	}
	for _, bad := range []string{"", "validationException", "Validation", "KMSInvalidStateException"} {
		if _, ok := ParseErrorName(bad); ok || ErrorName(bad).Known() {
			t.Errorf("%q accepted", bad)
		}
		if ErrorName(bad).Status() != 500 || ErrorName(bad).Retryable() {
			t.Errorf("%q: status/retryable", bad)
		}
	}
	if errors.Is(ErrKeyNotFound, ErrInvalidUriPath) {
		t.Error("different names match")
	}
}

func TestErrorfAndNameOf(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	e := Errorf(InternalException, "backend A: %w", cause)
	if e.Message != "backend A: dial tcp: refused" || !errors.Is(e, cause) || e.Unwrap() != cause {
		t.Fatalf("%#v", e)
	}
	if got := e.Error(); got != "InternalException: backend A: dial tcp: refused" {
		t.Errorf("Error() = %q", got)
	}
	e2 := &Error{Name: KeyNotFoundException, Message: "m", Err: cause, HTTPStatus: 418}
	if got := e2.Error(); got != "KeyNotFoundException (HTTP 418): m: dial tcp: refused" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(e2, ErrKeyNotFound) || errors.Is(e2, &Error{Name: KeyNotFoundException, HTTPStatus: 404}) != true {
		t.Error("HTTPStatus must not matter to Is")
	}
	multi := Errorf(ThrottlingException, "%w and %w", cause, context.Canceled)
	if !errors.Is(multi, cause) || !errors.Is(multi, context.Canceled) {
		t.Error("multiple %w")
	}
	for _, tc := range []struct {
		err  error
		want ErrorName
	}{
		{nil, ""},
		{context.DeadlineExceeded, DependencyTimeoutException},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), DependencyTimeoutException},
		{context.Canceled, InternalException},
		{errors.New("boom"), InternalException},
		{&Error{}, InternalException},
		{fmt.Errorf("wrapped: %w", ErrThrottling), ThrottlingException},
	} {
		if got := NameOf(tc.err); got != tc.want {
			t.Errorf("NameOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain message", "plain message"},
		{"tab\there\nnl\x00nul\x7fdel", "tab?here?nl?nul?del"},
		{"é😀", "??"},
		{"bad\xff\xfeutf8", "bad??utf8"},
		{strings.Repeat("a", 600), strings.Repeat("a", 511)},
		{strings.Repeat("é", 600), strings.Repeat("?", 511)},
		{strings.Repeat("a", 511), strings.Repeat("a", 511)},
	}
	for _, tc := range cases {
		got := Sanitize(tc.in)
		if got != tc.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !isClean(got) || len(got) >= 512 {
			t.Errorf("not clean: %q", got)
		}
		// The body carries the same text, JSON-escaped.
		var w struct{ ErrorMessage string }
		if err := jsonUnmarshal(AppendErrorBody(nil, ValidationException, tc.in), &w); err != nil || w.ErrorMessage != tc.want {
			t.Errorf("body message %q (%v), want %q", w.ErrorMessage, err, tc.want)
		}
	}
	if got := string(AppendErrorBody(nil, KeyNotFoundException, `a "quoted" \ path`)); got != `{"errorName":"KeyNotFoundException","errorMessage":"a \"quoted\" \\ path"}` {
		t.Errorf("escaping: %s", got)
	}
	if got := string(AppendErrorBody(nil, ThrottlingException, "")); got != `{"errorName":"ThrottlingException"}` {
		t.Errorf("empty message: %s", got)
	}
}

func TestWriteError(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		wantStatus int
		wantBody   string
	}{
		{"xks error", Errorf(KeyNotFoundException, "no key %s", "k1"), 404, `{"errorName":"KeyNotFoundException","errorMessage":"no key k1"}`},
		{"wrapped", fmt.Errorf("route: %w", Errorf(ValidationException, "bad\x01")), 400, `{"errorName":"ValidationException","errorMessage":"bad?"}`},
		{"long message", Errorf(InvalidStateException, "%s", strings.Repeat("x", 600)), 400, `{"errorName":"InvalidStateException","errorMessage":"` + strings.Repeat("x", 511) + `"}`},
		{"foreign error text hidden", errors.New("open /etc/secret: denied"), 500, `{"errorName":"InternalException"}`},
		{"timeout", fmt.Errorf("backend: %w", context.DeadlineExceeded), 503, `{"errorName":"DependencyTimeoutException","errorMessage":"key manager did not answer in time"}`},
		{"unknown name", &Error{Name: "Bogus", Message: "m"}, 500, `{"errorName":"InternalException"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, tc.err)
			if rec.Code != tc.wantStatus {
				t.Errorf("status %d", rec.Code)
			}
			if got := rec.Body.String(); got != tc.wantBody {
				t.Errorf("body %s, want %s", got, tc.wantBody)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			if rec.Header().Get("Content-Length") == "" {
				t.Error("no Content-Length")
			}
		})
	}
	var _ http.ResponseWriter = httptest.NewRecorder()
}

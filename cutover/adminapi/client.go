package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// maxReply bounds what Client reads (a plan of 100k keys fits).
const maxReply = 64 << 20

// Client calls a running proxy's cutover admin API (the CLI side).
type Client struct {
	BaseURL string // e.g. https://127.0.0.1:9443 (the /v1/cutover paths are appended)
	Token   string // sent as "Authorization: Bearer <token>"
	HTTP    *http.Client
}

// Error is an error reply of the admin API.
type Error struct {
	Status  int
	Message string
	Code    string // the controller's name of the error ("" from a reply that has none)
}

func (e *Error) Error() string {
	return fmt.Sprintf("cutover admin API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Is maps the reply back to the controller's sentinel errors: by its code, and (for a reply of a
// release that sends none, or a sentinel of the same kind) by its HTTP status.
func (e *Error) Is(target error) bool {
	if s := cutover.ErrorByCode(e.Code); s != nil && s == target {
		return true
	}
	switch e.Status {
	case http.StatusConflict:
		return target == cutover.ErrWrongState
	case http.StatusServiceUnavailable:
		return target == cutover.ErrUnreachable
	}
	return false
}

func (a *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cutover admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return fmt.Errorf("cutover admin API: reading reply: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e errorReply
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = cutover.Truncate(strings.TrimSpace(string(data)))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error, Code: e.Code}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("cutover admin API: decoding reply: %w", err)
		}
	}
	return nil
}

// Plan asks the proxy for a migration plan of opts' pair (empty names: the configured one).
func (a *Client) Plan(ctx context.Context, opts cutover.PlanOptions) (*cutover.Plan, error) {
	var p cutover.Plan
	if err := a.do(ctx, http.MethodPost, "/v1/cutover/plan", opts, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Start starts a migration and returns the status it started in.
func (a *Client) Start(ctx context.Context, opts cutover.StartOptions) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/start", opts)
}

// Status reads the controller's status.
func (a *Client) Status(ctx context.Context) (*cutover.Status, error) {
	var s cutover.Status
	if err := a.do(ctx, http.MethodGet, "/v1/cutover/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Switch switches traffic to the target and returns the new status.
func (a *Client) Switch(ctx context.Context) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/switch", struct{}{})
}

// Rollback returns traffic to the source and returns the new status.
func (a *Client) Rollback(ctx context.Context, reason string) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/rollback", map[string]string{"reason": reason})
}

// Finalize stops falling back to the source and returns the new status.
func (a *Client) Finalize(ctx context.Context, opts cutover.FinalizeOptions) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/finalize", opts)
}

// Pause pauses the migration's background work and returns the new status.
func (a *Client) Pause(ctx context.Context) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/pause", struct{}{})
}

// Resume lets the background work go on at the pace and returns the new status.
func (a *Client) Resume(ctx context.Context) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/resume", struct{}{})
}

// call POSTs in to an operation that answers with the controller's status.
func (a *Client) call(ctx context.Context, path string, in any) (*cutover.Status, error) {
	var s cutover.Status
	if err := a.do(ctx, http.MethodPost, path, in, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

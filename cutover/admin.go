package cutover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 16 << 10

// maxAdminReply bounds what AdminClient reads (a plan of 100k keys fits).
const maxAdminReply = 64 << 20

// MarshalJSON writes Shadow as a Go duration string ("30s").
func (o StartOptions) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Shadow       string `json:"shadow"`
		AutoSwitch   bool   `json:"auto_switch"`
		AutoFinalize bool   `json:"auto_finalize"`
	}{o.Shadow.String(), o.AutoSwitch, o.AutoFinalize})
}

// UnmarshalJSON reads Shadow as a duration string or a number of nanoseconds.
func (o *StartOptions) UnmarshalJSON(b []byte) error {
	var v struct {
		Shadow       json.RawMessage `json:"shadow"`
		AutoSwitch   bool            `json:"auto_switch"`
		AutoFinalize bool            `json:"auto_finalize"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*o = StartOptions{AutoSwitch: v.AutoSwitch, AutoFinalize: v.AutoFinalize}
	if len(v.Shadow) == 0 || string(v.Shadow) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(v.Shadow, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("shadow: %v", err)
		}
		o.Shadow = d
	} else {
		var n int64
		if err := json.Unmarshal(v.Shadow, &n); err != nil {
			return errors.New("shadow: want a duration such as \"30s\"")
		}
		o.Shadow = time.Duration(n)
	}
	if o.Shadow < 0 || o.Shadow > 7*24*time.Hour {
		return errors.New("shadow: out of range")
	}
	return nil
}

// Handler is the admin API; the proxy mounts it behind its token auth.
//
//	GET  /v1/cutover/status
//	POST /v1/cutover/plan
//	POST /v1/cutover/start     StartOptions
//	POST /v1/cutover/switch
//	POST /v1/cutover/rollback  {"reason": "..."}
//	POST /v1/cutover/finalize  {"revoke_source_grants": bool}
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cutover/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/plan", func(w http.ResponseWriter, r *http.Request) {
		if !readBody(w, r, nil) {
			return
		}
		p, err := c.Plan(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("POST /v1/cutover/start", func(w http.ResponseWriter, r *http.Request) {
		var o StartOptions
		if !readBody(w, r, &o) {
			return
		}
		// The run outlives the request: Start only uses ctx to wait for the lock.
		if err := c.Start(r.Context(), o); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/switch", func(w http.ResponseWriter, r *http.Request) {
		if !readBody(w, r, nil) {
			return
		}
		if err := c.Switch(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if !readBody(w, r, &req) {
			return
		}
		if err := c.Rollback(r.Context(), req.Reason); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/finalize", func(w http.ResponseWriter, r *http.Request) {
		var o FinalizeOptions
		if !readBody(w, r, &o) {
			return
		}
		if err := c.Finalize(r.Context(), o); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("/v1/cutover/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such admin endpoint"})
	})
	return mux
}

// readBody decodes a bounded JSON body into v (nil: the body must be empty or
// "{}"). It writes the error reply itself and returns false on failure.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	if v == nil {
		v = &struct{}{}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON body: " + truncate(err.Error())})
		return false
	}
	return true
}

func writeErr(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrWrongState), errors.Is(err, ErrRunning), errors.Is(err, ErrRefused):
		status = http.StatusConflict
	case errors.Is(err, ErrUnreachable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// AdminClient calls a running proxy's cutover admin API (the CLI side).
type AdminClient struct {
	BaseURL string // e.g. https://127.0.0.1:9443 (the /v1/cutover paths are appended)
	Token   string // sent as "Authorization: Bearer <token>"
	HTTP    *http.Client
}

// AdminError is an error reply of the admin API.
type AdminError struct {
	Status  int
	Message string
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("cutover admin API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Is maps HTTP statuses back to the package's sentinel errors.
func (e *AdminError) Is(target error) bool {
	switch e.Status {
	case http.StatusConflict:
		return target == ErrWrongState
	case http.StatusServiceUnavailable:
		return target == ErrUnreachable
	}
	return false
}

func (a *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminReply))
	if err != nil {
		return fmt.Errorf("cutover admin API: reading reply: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = truncate(strings.TrimSpace(string(data)))
		}
		return &AdminError{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("cutover admin API: decoding reply: %w", err)
		}
	}
	return nil
}

// Plan asks the proxy for a migration plan.
func (a *AdminClient) Plan(ctx context.Context) (*Plan, error) {
	var p Plan
	if err := a.do(ctx, http.MethodPost, "/v1/cutover/plan", struct{}{}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Start starts a migration.
func (a *AdminClient) Start(ctx context.Context, opts StartOptions) error {
	return a.do(ctx, http.MethodPost, "/v1/cutover/start", opts, nil)
}

// Status reads the controller's status.
func (a *AdminClient) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := a.do(ctx, http.MethodGet, "/v1/cutover/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Switch switches traffic to the target.
func (a *AdminClient) Switch(ctx context.Context) error {
	return a.do(ctx, http.MethodPost, "/v1/cutover/switch", struct{}{}, nil)
}

// Rollback returns traffic to the source.
func (a *AdminClient) Rollback(ctx context.Context, reason string) error {
	return a.do(ctx, http.MethodPost, "/v1/cutover/rollback", map[string]string{"reason": reason}, nil)
}

// Finalize stops falling back to the source.
func (a *AdminClient) Finalize(ctx context.Context, opts FinalizeOptions) error {
	return a.do(ctx, http.MethodPost, "/v1/cutover/finalize", opts, nil)
}

// Package adminapi is the cutover admin HTTP API: the handler the proxy mounts on its admin
// listener (behind its token auth), the client the CLI uses, and the text rendering of a
// status. The controller itself (package cutover) knows nothing of HTTP.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// Controller is what the API drives: *cutover.Controller.
type Controller interface {
	Status() cutover.Status
	Plan(ctx context.Context, opts ...cutover.PlanOptions) (*cutover.Plan, error)
	Start(ctx context.Context, opts cutover.StartOptions) error
	Switch(ctx context.Context) error
	Rollback(ctx context.Context, reason string) error
	Finalize(ctx context.Context, opts cutover.FinalizeOptions) error
	SetPaused(ctx context.Context, paused bool) error
}

var _ Controller = (*cutover.Controller)(nil)

// maxBody bounds admin request bodies.
const maxBody = 16 << 10

// ControlTimeout bounds one control call (plan, switch, rollback, finalize). A rollback copies
// back the keys created on the target and re-checks the rights of every migrated key before it
// answers: with thousands of keys under load that outlasts the admin listener's write timeout,
// and the caller saw EOF for a rollback that went on and completed. These calls get this long
// instead, their reply a margin more, and the CLI's client waits longer than both.
const ControlTimeout = 4 * time.Minute

// controlCall lifts the listener's write deadline (set when the request was read) for a
// control call and bounds the call itself by ControlTimeout.
func controlCall(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc) {
	// A writer without deadlines (a test recorder) has no listener timeout to lift.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(ControlTimeout + 15*time.Second))
	return context.WithTimeout(r.Context(), ControlTimeout)
}

// Handler serves the admin API for c; the proxy mounts it behind its token auth.
//
//	GET  /v1/cutover/status
//	POST /v1/cutover/plan
//	POST /v1/cutover/start     cutover.StartOptions
//	POST /v1/cutover/switch
//	POST /v1/cutover/rollback  {"reason": "..."}
//	POST /v1/cutover/finalize  {"revoke_source_grants": bool}
//	POST /v1/cutover/pause
//	POST /v1/cutover/resume
func Handler(c Controller) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cutover/status", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/plan", func(w http.ResponseWriter, r *http.Request) {
		var o cutover.PlanOptions
		if !readBody(w, r, &o) {
			return
		}
		ctx, cancel := controlCall(w, r)
		defer cancel()
		p, err := c.Plan(ctx, o)
		if err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("POST /v1/cutover/start", func(w http.ResponseWriter, r *http.Request) {
		var o cutover.StartOptions
		if !readBody(w, r, &o) {
			return
		}
		// The run outlives the request: Start only uses ctx to wait for the lock.
		if err := c.Start(r.Context(), o); err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusAccepted, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/switch", func(w http.ResponseWriter, r *http.Request) {
		if !readBody(w, r, nil) {
			return
		}
		ctx, cancel := controlCall(w, r)
		defer cancel()
		if err := c.Switch(ctx); err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if !readBody(w, r, &req) {
			return
		}
		ctx, cancel := controlCall(w, r)
		defer cancel()
		if err := c.Rollback(ctx, req.Reason); err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /v1/cutover/finalize", func(w http.ResponseWriter, r *http.Request) {
		var o cutover.FinalizeOptions
		if !readBody(w, r, &o) {
			return
		}
		ctx, cancel := controlCall(w, r)
		defer cancel()
		if err := c.Finalize(ctx, o); err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, c.Status())
	})
	for path, paused := range map[string]bool{"pause": true, "resume": false} {
		mux.HandleFunc("POST /v1/cutover/"+path, func(w http.ResponseWriter, r *http.Request) {
			if !readBody(w, r, nil) {
				return
			}
			if err := c.SetPaused(r.Context(), paused); err != nil {
				WriteError(w, err)
				return
			}
			WriteJSON(w, http.StatusOK, c.Status())
		})
	}
	mux.HandleFunc("/v1/cutover/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(http.StatusNotFound, "no such admin endpoint"))
	})
	return mux
}

// readBody decodes a bounded JSON body into v (nil: the body must be empty or
// "{}"). It writes the error reply itself and returns false on failure.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		WriteError(w, Errorf(http.StatusRequestEntityTooLarge, "request body too large"))
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
		WriteError(w, Errorf(http.StatusBadRequest, "invalid JSON body: %s", cutover.Truncate(err.Error())))
		return false
	}
	return true
}

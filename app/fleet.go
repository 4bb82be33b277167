package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
)

// forwardedHeader marks an admin call forwarded by another member, so that a call never
// travels twice (the driver changed meanwhile: the operator retries).
const forwardedHeader = "X-Xksproxy-Forwarded-By"

// fleetAdmin serves the cutover admin API on any member of a fleet: operator actions and
// status are forwarded to the elected driver (with the caller's token, which every member
// shares); `forget` acts through the store here. With no reachable driver, status answers with
// this member's own view and actions are refused with 503.
func fleetAdmin(ctrl *cutover.Controller, local http.Handler) http.Handler {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // a rollback copies keys back before it answers
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cutover/forget", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name string `json:"name"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Name == "" {
			writeAdminErr(w, http.StatusBadRequest, "body must be {\"name\": \"MEMBER\"}")
			return
		}
		err := ctrl.Forget(r.Context(), req.Name)
		switch {
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_ = json.NewEncoder(w).Encode(ctrl.Status())
		case errors.Is(err, cutover.ErrMemberAlive):
			writeAdminErr(w, http.StatusConflict, err.Error())
		case errors.Is(err, cutover.ErrUnknownMember):
			writeAdminErr(w, http.StatusNotFound, err.Error())
		default:
			writeAdminErr(w, http.StatusServiceUnavailable, err.Error())
		}
	})
	mux.HandleFunc("/v1/cutover/", func(w http.ResponseWriter, r *http.Request) {
		if ctrl.IsDriver() {
			local.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		name, addr, err := ctrl.Driver(ctx)
		cancel()
		target, perr := url.Parse(addr)
		status := r.Method == http.MethodGet
		if err != nil || name == "" || addr == "" || perr != nil || r.Header.Get(forwardedHeader) != "" {
			if status {
				local.ServeHTTP(w, r) // this member's view: epoch, route, members
				return
			}
			msg := "no driver is elected right now (or it advertises no admin address); retry shortly"
			if err != nil {
				msg = "the fleet store is unreachable: " + err.Error()
			}
			writeAdminErr(w, http.StatusServiceUnavailable, msg)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, "request body could not be read")
			return
		}
		forwardToDriver(w, r, tr, target, body, ctrl.Status().Fleet.Member, func(w http.ResponseWriter, err error) {
			if status {
				local.ServeHTTP(w, r)
				return
			}
			writeAdminErr(w, http.StatusBadGateway, "forwarding to the driver "+name+" failed: "+err.Error())
		})
	})
	return mux
}

// forwardToDriver relays an admin call to the driver at target. A control call (anything but a
// GET) may take minutes there (a rollback copies keys back before it answers): this listener's
// write deadline, set when the request was read, is lifted as the driver's own is, or the
// operator would see EOF for a call that went on to complete.
func forwardToDriver(w http.ResponseWriter, r *http.Request, tr http.RoundTripper, target *url.URL, body []byte, member string, failed func(http.ResponseWriter, error)) {
	if r.Method != http.MethodGet {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(adminapi.ControlTimeout + 30*time.Second))
	}
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = r.URL.Path
			pr.Out.URL.RawPath = ""
			pr.Out.Header.Set(forwardedHeader, member)
			pr.Out.Body = io.NopCloser(bytes.NewReader(body))
			pr.Out.ContentLength = int64(len(body))
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) { failed(w, err) },
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rp.ServeHTTP(w, r)
}

func writeAdminErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

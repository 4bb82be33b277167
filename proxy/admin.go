package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"path"
	"strings"
)

// PeerPrefix is the admin path space served without the bearer token (a Migration's
// PeerHandler, at PeerPath).
const PeerPrefix = "/v1/fleet/"

// adminHandler puts the admin mux behind a bearer-token check (constant-time compare of the
// SHA-256 digests, so the token length does not leak either). A clean path under PeerPrefix
// that a peer handler serves goes to it without the token: it authenticates each call itself.
func (p *Proxy) adminHandler() http.Handler {
	want := sha256.Sum256([]byte(p.cfg.Admin.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if up := r.URL.Path; strings.HasPrefix(up, PeerPrefix) && cleanPath(up) && r.URL.RawPath == "" {
			if h, pattern := p.peerMux.Handler(r); pattern != "" {
				h.ServeHTTP(w, r)
				return
			}
		}
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="xksproxy-admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			p.log.Warn("admin request refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			return
		}
		p.adminMux.ServeHTTP(w, r)
	})
}

// cleanPath: no empty, "." or ".." segment (a trailing slash is fine).
func cleanPath(p string) bool {
	c := path.Clean(p)
	return c == p || c+"/" == p
}

func writeAdminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (p *Proxy) adminRoute(w http.ResponseWriter, r *http.Request) { writeAdminJSON(w, p.Route()) }

func (p *Proxy) adminHealth(w http.ResponseWriter, r *http.Request) {
	writeAdminJSON(w, struct {
		CheckedAt string `json:"checkedAt"`
		Health    any    `json:"health"`
	}{p.HealthCheckedAt().UTC().Format("2006-01-02T15:04:05Z07:00"), p.Health()})
}

package proxy

import "net/http"

// serveReady answers GET /ready, the readiness probe of an orchestrator: 200 "ready" once the
// proxy may take traffic, 503 "not ready" before. The Migration decides (none: always ready once
// listening); in fleet mode it stays false until this replica applied its first epoch, so a
// load balancer never sends AWS traffic to a replica that does not yet know where keys live.
// /ping stays the liveness probe: a replica waiting for etcd is alive, only not ready.
func (p *Proxy) serveReady(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = []string{"GET, HEAD"}
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, status := "ready\n", http.StatusOK
	if mig := p.cfg.Migration; mig != nil && !mig.Ready() {
		body, status = "not ready\n", http.StatusServiceUnavailable
	}
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(body))
	}
}

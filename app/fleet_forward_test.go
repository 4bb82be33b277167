package app

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A control call forwarded to the driver answers even when the driver takes longer than the
// forwarding member's write timeout: the hour soak's finalize, forwarded while an automatic
// rollback held the driver for over a minute, ended in EOF before the deadline was lifted here.
func TestForwardedControlCallOutlastsWriteTimeout(t *testing.T) {
	driver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(forwardedHeader) != "r2" {
			t.Errorf("forwarded header %q", r.Header.Get(forwardedHeader))
		}
		b, _ := io.ReadAll(r.Body)
		time.Sleep(400 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"echo":` + string(b) + `}`))
	}))
	t.Cleanup(driver.Close)
	target, err := url.Parse(driver.URL)
	if err != nil {
		t.Fatal(err)
	}
	member := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		forwardToDriver(w, r, http.DefaultTransport, target, body, "r2", func(w http.ResponseWriter, err error) {
			t.Errorf("forward failed: %v", err)
			w.WriteHeader(http.StatusBadGateway)
		})
	}))
	member.Config.WriteTimeout = 100 * time.Millisecond
	member.Start()
	t.Cleanup(member.Close)
	c := &http.Client{Timeout: 30 * time.Second}
	for _, path := range []string{"/v1/cutover/finalize", "/v1/cutover/rollback"} {
		t.Run(path, func(t *testing.T) {
			resp, err := c.Post(member.URL+path, "application/json", strings.NewReader(`{"reason":"slow"}`))
			if err != nil {
				t.Fatalf("forwarded call that outlasts the write timeout: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(b) != `{"echo":{"reason":"slow"}}` {
				t.Errorf("reply %d %s", resp.StatusCode, b)
			}
		})
	}
}

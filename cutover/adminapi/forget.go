package adminapi

import (
	"context"
	"net/http"
)

// Forget removes from the fleet a member whose lease expired (`xksproxy cutover forget NAME`),
// so that phase changes stop waiting for it; refused (409) while the member is alive. Any member
// serves it (fleet mode only).
func (a *Client) Forget(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodPost, "/v1/cutover/forget", map[string]string{"name": name}, nil)
}

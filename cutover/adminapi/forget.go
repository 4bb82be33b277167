package adminapi

import (
	"context"

	"github.com/xksproxy/xksproxy/cutover"
)

// Forget removes from the fleet a member whose lease expired (`xksproxy cutover forget NAME`),
// so that phase changes stop waiting for it; refused (409) while the member is alive. Any member
// serves it (fleet mode only).
func (a *Client) Forget(ctx context.Context, name string) (*cutover.Status, error) {
	return a.call(ctx, "/v1/cutover/forget", map[string]string{"name": name})
}

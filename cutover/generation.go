package cutover

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A backend whose XKS access-control generation is not configured (ACLBoth, the configuration
// file's default) is asked for its release at start-up: where a right lives (per principal, or
// [aws-xks-service]) decides what a copy must write and where a new key is minted (MintOn). When
// the release cannot be read, ACLBoth stays and the rules take the cautious side for both.

// generationTimeout bounds the release read of each backend at start-up.
const generationTimeout = 2 * time.Second

// generationOf names the XKS access-control generation of a Cosmian release as /version reports
// it ("5.26.0 (OpenSSL …)"): up to 5.27.0 XKS calls run as the caller's principal; from 5.27.1
// as [aws-xks-service]. ok is false for a text it cannot read.
func generationOf(version string) (gen string, ok bool) {
	f := strings.Fields(strings.Trim(strings.TrimSpace(version), `"`))
	if len(f) == 0 {
		return "", false
	}
	parts := strings.SplitN(strings.TrimPrefix(f[0], "v"), ".", 3)
	if len(parts) < 2 {
		return "", false
	}
	var n [3]int
	for i, p := range parts {
		if i == 2 {
			p, _, _ = strings.Cut(p, "-")
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return "", false
		}
		n[i] = v
	}
	if n[0] > 5 || n[0] == 5 && (n[1] > 27 || n[1] == 27 && n[2] >= 1) {
		return ACLService, true
	}
	return ACLARN, true
}

// detectGenerations resolves ACLBoth on each backend from its release, concurrently; called in
// New, before anything reads the generations.
func (c *sides) detectGenerations(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range []*backend{c.src, c.tgt} {
		if b.acl != ACLBoth {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, generationTimeout)
			v, err := b.k.Version(cctx)
			cancel()
			gen, ok := generationOf(v)
			if err != nil || !ok {
				c.log.Warn("cutover: cannot tell the backend's Cosmian release; its access-control generation is taken as unknown (the cautious rules for both apply)",
					"backend", b.name, "version", truncate(v), "err", err)
				return
			}
			b.acl = gen
			c.log.Info("cutover: backend generation from its release", "backend", b.name, "version", truncate(v), "acl", gen)
		})
	}
	wg.Wait()
}
